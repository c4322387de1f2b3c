"""Test media made on the spot: espeak-ng speech with known sentence onsets, in real containers.

Speech comes from espeak-ng (a real synthesiser, installed by the Makefile); containers are
encoded with PyAV (the same FFmpeg build the daemon decodes with), so every format test reads a
file a real encoder wrote.
"""

from __future__ import annotations

import subprocess
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

SR = 22050  # espeak-ng's own rate


def speak(text: str, voice: str = "en-us", speed: int = 160) -> np.ndarray:
    """One utterance from espeak-ng as float32 samples at SR, leading/trailing silence trimmed."""
    out = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
                         check=True, capture_output=True).stdout
    data = np.frombuffer(out[44:], dtype=np.int16).astype(np.float32) / 32768.0
    loud = np.flatnonzero(np.abs(data) > 0.01)
    return data[loud[0]:loud[-1] + 1] if len(loud) else data


@dataclass(frozen=True)
class Speech:
    samples: np.ndarray
    sample_rate: int
    sentences: tuple[str, ...]
    onsets: tuple[float, ...]  # true start of each sentence, seconds
    ends: tuple[float, ...] = ()  # true end of each sentence, seconds

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


def build_speech(sentences: list[str], gap: float = 1.2, lead: float = 0.8,
                 tail: float = 0.8, voice: str = "en-us") -> Speech:
    """Sentences joined by silences of `gap` seconds; onsets are known to the sample."""
    parts, onsets, ends, t = [np.zeros(int(lead * SR), np.float32)], [], [], lead
    for i, sentence in enumerate(sentences):
        clip = speak(sentence, voice)
        onsets.append(t)
        parts.append(clip)
        t += len(clip) / SR
        ends.append(t)
        silence = tail if i == len(sentences) - 1 else gap
        parts.append(np.zeros(int(silence * SR), np.float32))
        t += silence
    return Speech(np.concatenate(parts), SR, tuple(sentences), tuple(onsets), tuple(ends))


def to_16k(samples: np.ndarray, rate: int = SR) -> np.ndarray:
    """`samples` at 16 kHz (linear interpolation: enough for tests of the VAD and the gate)."""
    n = int(len(samples) * 16000 / rate)
    return np.interp(np.arange(n) / 16000, np.arange(len(samples)) / rate,
                     samples).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(sample_rate)
        fh.writeframes(pcm.tobytes())
    return path


# container → (audio codec, audio rate, video codec or None)
FORMATS = {
    "wav": ("pcm_s16le", None, None),
    "mp3": ("libmp3lame", None, None),
    "m4a": ("aac", None, None),
    "flac": ("flac", None, None),
    "ogg": ("vorbis", 44100, None),
    "opus": ("libopus", 48000, None),
    "mp4": ("aac", None, "mpeg4"),
    "mkv": ("aac", None, "mpeg4"),
    "webm": ("libopus", 48000, "libvpx"),
    "mov": ("aac", None, "mpeg4"),
}


def encode(path: Path, samples: np.ndarray | None, sample_rate: int = SR,
           ext: str | None = None, video_seconds: float | None = None) -> Path:
    """Write `samples` (None: no audio) into a container chosen by the extension."""
    import av

    ext = ext or path.suffix.lstrip(".")
    audio_codec, audio_rate, video_codec = FORMATS[ext]
    fmt = {"m4a": "mp4", "mkv": "matroska", "ogg": "ogg", "opus": "ogg"}.get(ext)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as out:
        astream = vstream = None
        if samples is not None:
            # FFmpeg's native vorbis encoder is flagged experimental (libvorbis is not built in)
            opts = {"strict": "experimental"} if audio_codec == "vorbis" else {}
            astream = out.add_stream(audio_codec, rate=audio_rate or sample_rate, options=opts)
            # FFmpeg's own vorbis encoder only does stereo
            astream.layout = "stereo" if audio_codec == "vorbis" else "mono"
        if video_codec and (video_seconds or samples is not None):
            vstream = out.add_stream(video_codec, rate=10)
            vstream.width, vstream.height, vstream.pix_fmt = 64, 48, "yuv420p"
        if vstream is not None:
            seconds = video_seconds or len(samples) / sample_rate
            _encode_video(out, vstream, seconds)
        if astream is not None:
            _encode_audio(out, astream, samples, sample_rate)
    return path


def _encode_audio(out, stream, samples: np.ndarray, sample_rate: int) -> None:
    import av

    ctx = stream.codec_context
    resampler = av.AudioResampler(format=ctx.format, layout=ctx.layout, rate=ctx.sample_rate,
                                  frame_size=ctx.frame_size or None)
    block = 4096
    pts = 0
    for i in range(0, len(samples), block):
        chunk = np.ascontiguousarray(samples[i:i + block], dtype=np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = pts
        frame.time_base = Fraction(1, sample_rate)
        pts += chunk.shape[1]
        for rframe in resampler.resample(frame):
            out.mux(stream.encode(rframe))
    for rframe in resampler.resample(None):
        out.mux(stream.encode(rframe))
    out.mux(stream.encode(None))


def _encode_video(out, stream, seconds: float) -> None:
    import av

    for n in range(max(1, int(seconds * 10))):
        img = np.full((48, 64, 3), (n * 7) % 255, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = n
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def copy_slowly(src: Path, dst: Path, pieces: int, pause: float) -> None:
    """Copy like a slow network transfer: the file grows in pieces with pauses between."""
    import time

    data = src.read_bytes()
    size = -(-len(data) // pieces)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "wb") as fh:
        for i in range(0, len(data), size):
            fh.write(data[i:i + size])
            fh.flush()
            time.sleep(pause)
