"""Bazarr's Whisper provider (and any whisper-asr-webservice client) talking to subwatch.

`POST /asr` and `POST /detect-language` answer as whisper-asr-webservice does: a multipart
field `audio_file`; query `encode` (false: the body is raw 16 kHz mono s16le PCM, what Bazarr
sends), `task`, `language`, `output` (txt | vtt | srt | tsv | json), `word_timestamps`,
`vad_filter`, `initial_prompt`; the subtitle as `text/plain` with `Content-Disposition:
attachment; filename="<name>.<output>"`, and `{"detected_language", "language_code",
"confidence"}` for a language. A bad request is a 422 (as FastAPI answers it there), a body over
`http.max_upload_bytes` a 413.

Unlike whisper-asr-webservice, an upload is a job like any other: streamed to
`state_dir/uploads` in chunks (never whole in memory), admitted to the journal as kind `upload`
at priority 2 (before webhook files and the folder scan), seen in /jobs and /events, transcribed
by the same workers with the same loaded models. The request waits for the job; a client that
disconnects cancels it. Raw PCM is stored as a WAV (a header in front of the samples), so the
pipeline decodes it like any file.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from aiohttp import BodyPartReader, MultipartReader, web

from .config import Config, LiveConfig
from .control import Control
from .errors import InputError
from .intake import Intake
from .journal import FINAL_STATES, Identity, Job
from .languages import WHISPER_LANGUAGES, language_name
from .queue import JobQueue
from .threads import Blocking
from .uploads import UPLOAD, UploadRoom, remove_upload, uploads_dir, write_request
from .web import CREDENTIALS, FORM_PATHS

log = logging.getLogger(__name__)

UPLOAD_PRIORITY = 2  # before a webhook's file (1) and the folder scan (0)
FIELD = "audio_file"
CHUNK_BYTES = 1024 * 1024
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the audio, at most
POLL_SECONDS = 0.25
CANCEL_WAIT_SECONDS = 30.0  # after a disconnect: how long the job may take to stop
SAMPLE_RATE = 16000
DETECT_SECONDS = 30  # what Whisper hears to detect a language (as whisper-asr-webservice)
WAV_MAX_DATA = 0xFFFFFFFF - 36
OUTPUTS = ("txt", "vtt", "srt", "tsv", "json")
TRUE, FALSE = frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off"})
# failures that are the upload's fault (a 422); anything else is the daemon's (a 500)
MEDIA_PROBLEMS = frozenset({"not_media", "corrupt", "empty_file", "no_audio", "too_long",
                            "too_large", "unsafe_container", "not_a_file"})
ASR_ENGINE = "faster_whisper"
TOKEN_PREFIX = "/token/{token}"  # the same routes with http.token in the path (Bazarr)
RAW_NAME = ".raw"  # a file to convert (a client's name never starts with a dot: safe_name)
BUSY_RETRY_AFTER_SECONDS = 30  # no room for another upload now (UploadRoom)


class Refusal(Exception):
    """A request refused with a status and a reason (answered as JSON, connection closed when
    the body was not read to its end)."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message

    def response(self) -> web.Response:
        resp = web.json_response({"error": self.error, "detail": self.message},
                                 status=self.status)
        resp.force_close()  # an unread rest of a body is not drained first
        return resp


@dataclass(frozen=True)
class Options:
    """The query of an /asr or /detect-language request, checked."""

    encode: bool = True
    task: str = "transcribe"
    language: str | None = None
    output: str = "txt"
    word_timestamps: bool = False
    vad_filter: bool = False

    @classmethod
    def parse(cls, query: Any) -> Options:
        task = query.get("task") or "transcribe"
        language = query.get("language") or None
        output = query.get("output") or "txt"
        if task not in ("transcribe", "translate"):
            raise Refusal(422, "bad_request", "task: one of transcribe | translate")
        if language is not None and language not in WHISPER_LANGUAGES:
            raise Refusal(422, "bad_request", f"language: {language!r} is not a Whisper "
                                              "language code (en, de, fr, …)")
        if output not in OUTPUTS:
            raise Refusal(422, "bad_request", f"output: one of {' | '.join(OUTPUTS)}")
        return cls(_flag(query, "encode", True), task, language, output,
                   _flag(query, "word_timestamps", False), _flag(query, "vad_filter", False))


def _flag(query: Any, name: str, default: bool) -> bool:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in TRUE | FALSE:
        return raw.lower() in TRUE
    raise Refusal(422, "bad_request", f"{name}: true or false, not {raw!r}")


@dataclass(frozen=True)
class Upload:
    token: str
    name: str  # the client's file name, for Content-Disposition
    path: Path  # what the job reads
    received: int  # bytes of audio that arrived

    @property
    def rel_path(self) -> str:
        return f"{self.token}/{self.path.name}"


def safe_name(filename: str | None) -> str:
    """A file name from a client, reduced to a harmless one ("audio_file" when there is none)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", (filename or "").replace("\\", "/").split("/")[-1])
    return base.strip("._")[:100] or FIELD


def wav_header(data_bytes: int) -> bytes:
    """A 44-byte header for 16 kHz mono s16le PCM of `data_bytes` bytes."""
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16)
            + b"data" + struct.pack("<I", data_bytes))


class Sink:
    """Where one upload's bytes go, written in the daemon's threads: the file as sent, or raw
    PCM behind a WAV header (fixed at the end). `keep` bounds what is kept (the rest is counted
    and dropped: language detection hears the first 30 s)."""

    def __init__(self, path: Path, pcm: bool, keep: int | None) -> None:
        self.path, self.pcm, self.keep = path, pcm, keep
        self.kept = 0
        self._fh: BinaryIO = open(path, "wb")  # closed by finish or abort
        if pcm:
            self._fh.write(wav_header(0))

    def write(self, chunk: bytes) -> None:
        if self.keep is not None:
            chunk = chunk[:max(0, self.keep - self.kept)]
        if self.pcm and self.kept + len(chunk) > WAV_MAX_DATA:
            raise Refusal(413, "too_large", "raw PCM over 4 GiB does not fit a WAV")
        self._fh.write(chunk)
        self.kept += len(chunk)

    def finish(self) -> None:
        if self.pcm:
            data = self.kept - self.kept % 2  # a half sample at the end is dropped
            self._fh.truncate(44 + data)
            self._fh.seek(0)
            self._fh.write(wav_header(data))
        self._fh.close()

    def abort(self) -> None:
        self._fh.close()


class AsrApi:
    """The two routes, with the parts they use."""

    def __init__(self, live: LiveConfig, journal: JobQueue, intake: Intake, control: Control,
                 blocking: Blocking) -> None:
        self._live = live
        self._journal = journal
        self._intake = intake
        self._control = control
        self._blocking = blocking
        self.room = UploadRoom(live)

    def register(self, app: web.Application) -> None:
        for prefix in ("", TOKEN_PREFIX):
            app.router.add_post(f"{prefix}/asr", self.asr)
            app.router.add_post(f"{prefix}/detect-language", self.detect_language)
            app.setdefault(FORM_PATHS, set()).update({f"{prefix}/asr",
                                                      f"{prefix}/detect-language"})
        app.setdefault(CREDENTIALS, []).append(self.path_token_ok)
        app.on_startup.append(self._sweep)

    def path_token_ok(self, request: web.Request) -> bool:
        """http.token as the endpoint's first path segments (`/token/<token>/asr`): Bazarr's
        provider sends no header and appends the route to the endpoint, so a `?token=` in its
        endpoint setting cannot work."""
        token = self._live.current.http.token
        given = request.match_info.get("token", "")
        return bool(token and given) and request.path.startswith("/token/") \
            and hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode())

    # ------------------------------------------------------------------ routes

    async def asr(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, detect=False)

    async def detect_language(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, detect=True)

    async def _serve(self, request: web.Request, detect: bool) -> web.StreamResponse:
        ticket = self.room.take(request.content_length)  # before a byte of the body is read
        if ticket is None:
            return _busy()
        try:
            return await self._serve_in(request, detect, ticket)
        finally:
            self.room.give_back(ticket)  # after its files are gone

    async def _serve_in(self, request: web.Request, detect: bool,
                        ticket: int) -> web.StreamResponse:
        upload: Upload | None = None
        try:
            options = Options.parse(request.query)
            if detect:  # the language of the first 30 s, heard, whatever [whisper] forces
                options = Options(encode=options.encode, language="auto", output="json")
            upload = await self._receive(request, options, detect)
            self.room.settle(ticket, upload.received)
            job = await self._run(request, upload, options)
            return await self._answer(job, upload, options, detect)
        except Refusal as refusal:
            # the route's name, not the path: /token/<token>/asr would put the token in the log
            log.info("%s refused: %s %s", "/detect-language" if detect else "/asr",
                     refusal.status, refusal.message)
            return refusal.response()
        finally:
            if upload is not None:
                await self._blocking(remove_upload, self._live.current, upload.rel_path)

    # ------------------------------------------------------------------ receiving

    async def _receive(self, request: web.Request, options: Options, detect: bool) -> Upload:
        limit = self._live.current.http.max_upload_bytes
        if (request.content_length or 0) > limit + MULTIPART_SLACK:
            raise Refusal(413, "too_large", f"the body ({request.content_length} bytes) is over "
                                            f"http.max_upload_bytes ({limit})")
        try:
            reader = await request.multipart()
        except (ValueError, AssertionError, KeyError, LookupError):
            raise Refusal(422, "bad_request", "expected multipart/form-data with a file field "
                                              f"{FIELD!r}") from None
        token = secrets.token_hex(8)
        folder = uploads_dir(self._live.current) / "in" / token
        try:
            found = await self._parts(reader, folder, token, options, detect, limit)
        except BaseException:
            await self._blocking(remove_upload, self._live.current, token)
            raise
        if found is None:
            await self._blocking(remove_upload, self._live.current, token)
            raise Refusal(422, "bad_request", f"the multipart body has no field {FIELD!r}")
        return found

    async def _parts(self, reader: MultipartReader, folder: Path, token: str, options: Options,
                     detect: bool, limit: int) -> Upload | None:
        found: Upload | None = None
        seen = 0
        try:
            while (part := await reader.next()) is not None:
                if isinstance(part, BodyPartReader) and part.name == FIELD and found is None:
                    found = await self._store(part, folder, token, options, detect, limit - seen)
                    seen += found.received
                else:  # another field (or a nested multipart): counted and dropped
                    seen += await _drain(part, limit - seen)
        except (ValueError, AssertionError) as exc:  # a malformed body
            raise Refusal(422, "bad_request", f"a malformed multipart body ({exc})") from None
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise Refusal(400, "incomplete", f"the upload broke off ({exc})") from None
        return found

    async def _store(self, part: BodyPartReader, folder: Path, token: str, options: Options,
                     detect: bool, limit: int) -> Upload:
        """The audio field to disk, a chunk at a time: raw PCM as a WAV, a file as sent (for a
        language, converted to its first 30 s afterwards)."""
        name = safe_name(part.filename)
        pcm, convert = not options.encode, options.encode and detect
        path = folder / (f"{name}.wav" if pcm or convert else name)
        keep = DETECT_SECONDS * SAMPLE_RATE * 2 if detect and pcm else None
        await self._blocking(_make_folder, folder, options)
        sink = await self._blocking(Sink, folder / RAW_NAME if convert else path, pcm, keep)
        received = 0
        try:
            while chunk := await part.read_chunk(CHUNK_BYTES):
                received += len(chunk)
                if received > limit:
                    raise Refusal(413, "too_large", "the upload is over http.max_upload_bytes "
                                  f"({self._live.current.http.max_upload_bytes} bytes)")
                await self._blocking(sink.write, chunk)
            await self._blocking(sink.finish)
        except BaseException:
            await self._blocking(sink.abort)
            raise
        if convert:
            await self._blocking(_first_seconds, sink.path, path)
        return Upload(token, part.filename or FIELD, path, received)

    # ------------------------------------------------------------------ the job

    async def _run(self, request: web.Request, upload: Upload, options: Options) -> Job:
        st = await self._blocking(upload.path.stat)
        identity = Identity(upload.rel_path, st.st_size, st.st_mtime_ns, st.st_ino)
        job = await self._intake.admit_now(identity, kind=UPLOAD, priority=UPLOAD_PRIORITY)
        if job is None:  # a fresh token: cannot happen unless the journal is confused
            raise Refusal(409, "conflict", "this upload is already a job")
        log.info("upload %r (%d bytes%s) is job %s", upload.name, upload.received,
                 ", raw PCM" if not options.encode else "", job.id)
        return await self._wait(request, job.id)

    async def _wait(self, request: web.Request, job_id: str) -> Job:
        """Until the job ends; a client gone meanwhile cancels it (and the wait then only lets
        it stop, so its files are removed after it)."""
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            job = await self._blocking(self._journal.get, job_id)
            if job is None:
                raise Refusal(404, "gone", "the job was removed")
            if job.state in FINAL_STATES:
                return job
            if deadline is None and _client_gone(request):
                log.info("the client of upload job %s went away: canceling it", job_id)
                await self._control.cancel(job_id)
                deadline = loop.time() + CANCEL_WAIT_SECONDS
            if deadline is not None and loop.time() > deadline:
                raise Refusal(499, "client_gone", "the client went away")
            await asyncio.sleep(POLL_SECONDS)

    async def _answer(self, job: Job, upload: Upload, options: Options,
                      detect: bool) -> web.Response:
        if job.state != "done":
            raise _failure(job)
        if detect:
            code = job.language or "und"
            return web.json_response({"detected_language": language_name(code),
                                      "language_code": code, "confidence": None})
        text = await self._blocking(_result_text, job.outputs, options.output)
        filename = quote(upload.name)
        return web.Response(
            text=text, content_type="application/json" if options.output == "json"
            else "text/plain", charset="utf-8",
            headers={"Asr-Engine": ASR_ENGINE, "Subwatch-Job": job.id,
                     "Content-Disposition": f'attachment; filename="{filename}.{options.output}"'})

    async def _sweep(self, app: web.Application) -> None:
        """At start: an upload whose request died with the last run has nobody to answer;
        it is canceled and every upload file removed."""
        await self._blocking(sweep_uploads, self._live.current, self._journal)


def _busy() -> web.Response:
    """No room for the upload now (logged by the room, once a burst): try again later."""
    resp = Refusal(503, "busy", "other uploads hold http.max_upload_total_bytes; try again "
                                "later").response()
    resp.headers["Retry-After"] = str(BUSY_RETRY_AFTER_SECONDS)
    return resp


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _failure(job: Job) -> Refusal:
    if job.state == "failed":
        status = 422 if job.error in MEDIA_PROBLEMS else 500
        return Refusal(status, job.error or "failed", job.message or "the job failed")
    return Refusal(409, job.state, job.message or f"the job was {job.state}")


async def _drain(part: BodyPartReader | MultipartReader, limit: int) -> int:
    """Read a field that is not the audio to its end, counting it against the limit."""
    if isinstance(part, MultipartReader):
        total = 0
        while (inner := await part.next()) is not None:
            total += await _drain(inner, limit - total)
        return total
    total = 0
    while chunk := await part.read_chunk(CHUNK_BYTES):
        total += len(chunk)
        if total > limit:
            raise Refusal(413, "too_large", "the body is over http.max_upload_bytes")
    return total


def _make_folder(folder: Path, options: Options) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    asked = {"language": options.language, "task": options.task}
    write_request(folder, {k: v for k, v in asked.items() if v})


def _first_seconds(raw: Path, path: Path) -> None:
    try:
        first_seconds_wav(raw, path, DETECT_SECONDS)
    finally:
        raw.unlink(missing_ok=True)


def first_seconds_wav(src: Path, dst: Path, seconds: float) -> None:
    """The first `seconds` of `src`'s audio as 16 kHz mono PCM WAV, read through the decoder's
    own safe opening (plain media demuxers only). Not media: InputError, as the decoder says."""
    import av

    from .pipeline.opening import DEMUX_OPTIONS, MEDIA_DEMUXERS, open_input

    wanted = int(seconds * SAMPLE_RATE)
    pieces: list[bytes] = []
    try:
        with open_input(src) as fh, av.open(fh, options=DEMUX_OPTIONS) as container:
            if not set(container.format.name.split(",")) & MEDIA_DEMUXERS:
                raise InputError("unsafe_container", "not a plain media file")
            if not container.streams.audio:
                raise InputError("no_audio", "the file has no audio stream")
            got = _resampled(container, wanted, pieces.append)
    except av.error.FFmpegError as exc:
        raise Refusal(422, "not_media", f"not a readable media file ({exc})") from None
    except InputError as exc:
        raise Refusal(422, exc.code, str(exc)) from None
    with open(dst, "wb") as out:
        out.write(wav_header(got * 2))
        out.writelines(pieces)


def _resampled(container: Any, wanted: int, keep: Callable[[bytes], None]) -> int:
    import av

    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    got = 0
    for frame in container.decode(container.streams.audio[0]):
        for out in resampler.resample(frame):
            data = bytes(out.planes[0])[:out.samples * 2][:(wanted - got) * 2]
            keep(data)
            got += len(data) // 2
        if got >= wanted:
            break
    return got


def _result_text(outputs: list[str], fmt: str) -> str:
    """The job's output in the format asked for ("" when nothing was said)."""
    wanted = "json" if fmt in ("json", "tsv") else fmt
    path = next((Path(p) for p in outputs if p.endswith(f".{wanted}")), None)
    text = path.read_text(encoding="utf-8") if path is not None else ""
    if fmt == "json":
        return _webservice_json(text)
    if fmt == "tsv":
        return _tsv(text)
    return text


def _webservice_json(text: str) -> str:
    """Our JSON with whisper-asr-webservice's `text` (all segments' text) beside it."""
    data: dict[str, Any] = json.loads(text) if text else {"segments": [], "cues": []}
    data["text"] = " ".join(s["text"].strip() for s in data.get("segments", []))
    return json.dumps(data, ensure_ascii=False)


def _tsv(text: str) -> str:
    """whisper-asr-webservice's TSV: start and end in integer milliseconds, then the text."""
    data = json.loads(text) if text else {"cues": []}
    rows = [f"{round(c['start'] * 1000)}\t{round(c['end'] * 1000)}\t"
            f"{c['text'].replace(chr(9), ' ')}" for c in data.get("cues", [])]
    return "start\tend\ttext\n" + "".join(row + "\n" for row in rows)


def sweep_uploads(config: Config, journal: JobQueue) -> int:
    """Cancel every unfinished upload job (its client is gone) and remove all upload files;
    how many were canceled. Blocking: run it in a thread."""
    canceled = 0
    for state in ("queued", "retry_wait", "running"):
        for job in journal.list_jobs(state, 1_000_000):
            if job.kind == UPLOAD and journal.cancel(
                    job.id, "its client is gone (the daemon restarted)", "orphaned",
                    ("queued", "retry_wait", "running")):
                canceled += 1
    root = uploads_dir(config)
    for side in ("in", "out"):
        folder = root / side
        if folder.is_dir():
            for entry in folder.iterdir():
                remove_upload(config, entry.name)
    if canceled:
        log.info("canceled %d upload job(s) left by the last run", canceled)
    return canceled
