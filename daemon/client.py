"""The daemon's HTTP API as the command line uses it: one place that knows the base URL, the
token header, and how each way of failing reads to a person.

The command line never touches the journal or the daemon's objects: a running daemon owns them,
and the API is the one way in that respects its locks, its events and its access rules. urllib
keeps this import-cheap (no event loop for one request). Every failure becomes a ClientError
whose text is one line for the user; the command line alone turns it into an exit code.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .config import Config

TIMEOUT_SECONDS = 10.0


class ClientError(Exception):
    """One line for the user; `status` is the HTTP status, None when there was no answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def client_host(host: str) -> str:
    """Where to connect for a bound address: a wildcard bind is reachable on loopback."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class DaemonClient:
    def __init__(self, base_url: str, token: str | None = None,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def from_config(cls, config: Config, url: str | None = None) -> DaemonClient:
        """The daemon this config runs (or `url`), with the config's token either way."""
        cfg = config.http
        if url and "://" not in url:  # "--url host:8750" means plain HTTP, as a browser reads it
            url = f"http://{url}"
        return cls(url or f"http://{client_host(cfg.host)}:{cfg.port}", cfg.token or None)

    # ------------------------------------------------------------------------ routes

    def status(self) -> dict[str, Any]:
        return dict(self.request("GET", "/status"))

    def jobs(self, state: str | None = None, limit: int | None = None) -> dict[str, Any]:
        query = {k: str(v) for k, v in (("state", state), ("limit", limit)) if v is not None}
        path = "/jobs" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        return dict(self.request("GET", path))

    def act(self, job_id: str, action: str) -> dict[str, Any]:
        """POST /jobs/{id}/retry or /cancel: `{"id", "state"}`; a refusal (409) says why."""
        path = f"/jobs/{urllib.parse.quote(job_id, safe='')}/{action}"
        return dict(self.request("POST", path, not_found=f"no such job: {job_id}"))

    # ------------------------------------------------------------------------ transport

    def request(self, method: str, path: str, not_found: str | None = None) -> Any:
        """The JSON answer of one request; ClientError for anything else."""
        try:
            with urllib.request.urlopen(self._request(method, path),
                                        timeout=self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            with exc:  # its body is an open response too: close it
                raise self._http_error(exc, path, not_found) from None
        except urllib.error.URLError as exc:
            raise self._unreachable(exc.reason) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # a timeout, a reset or a garbled answer mid-way; a port that is not a number
            raise self._unreachable(exc) from None
        try:
            return json.loads(body)
        except ValueError:
            raise ClientError(f"the daemon at {self.base_url} did not answer {path} with JSON: "
                              "is it subwatch?") from None

    def _request(self, method: str, path: str) -> urllib.request.Request:
        request = urllib.request.Request(self.base_url + path, method=method,
                                         data=b"{}" if method == "POST" else None)
        if method == "POST":  # the daemon takes only JSON POSTs (a web page cannot send one)
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        return request

    def _unreachable(self, reason: object) -> ClientError:
        return ClientError(f"cannot reach the daemon at {self.base_url}: {reason}")

    def _http_error(self, exc: urllib.error.HTTPError, path: str,
                    not_found: str | None) -> ClientError:
        code = exc.code
        if code == 401:
            return ClientError("the daemon refused the token: check http.token in the config"
                               if self.token else
                               "the daemon wants a token: set http.token in the config", code)
        if code == 404:
            return ClientError(not_found or f"{path}: not found at {self.base_url}", code)
        detail = _server_message(exc) or exc.reason
        if code == 409:  # the server says why ("a running job cannot be retried")
            return ClientError(str(detail), code)
        return ClientError(f"the daemon answered {code} to {path}: {detail}", code)


def _server_message(exc: urllib.error.HTTPError) -> str:
    """The `error` of a JSON answer, or the first line of a text one (aiohttp's HTTP errors)."""
    try:
        body = exc.read().decode("utf-8", "replace")
    except OSError:
        return ""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip().splitlines()[0][:200] if body.strip() else ""
    return str(data.get("error") or "") if isinstance(data, dict) else ""
