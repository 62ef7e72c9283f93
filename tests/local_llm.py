"""An OpenAI-compatible chat-completions server on 127.0.0.1 for the test suite.

It speaks the subset of the OpenAI REST API that `openai.OpenAI` uses for
`chat.completions.create` and `models.list`, so tests exercise the real client end to end
(URL building, headers, error mapping, timeouts) without internet access or an API key. Replies
are scripted one per request, so retries, fallbacks and failures can be asserted exactly.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from loopback import LoopbackServer, QuietHandler

__all__ = ["LocalLLM", "Reply"]

MODEL = "local-test"
_JSON = {"Content-Type": "application/json"}
# Error `type`/`code` pairs as OpenAI sends them, so clients that branch on them see the real values.
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request"),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided"),
    404: ("invalid_request_error", "unknown_url", "Unknown request URL"),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests"),
    500: ("server_error", None, "The server had an error while processing your request"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later"),
}


@dataclass
class Reply:
    """One scripted answer; `content` doubles as the error message when `status` isn't 200."""

    content: str | None = None
    status: int = 200
    delay_s: float = 0.0  # sleep before answering (to exceed a client timeout); cut short by stop()
    refusal: str | None = None  # sent as message.refusal with content None, as OpenAI does
    reject_json_schema: bool = False  # 400 requests asking for response_format json_schema
    reject_json_object: bool = False  # 400 requests asking for response_format json_object
    prompt_tokens: int = 120
    completion_tokens: int = 40


def _error(status: int, message: str | None = None) -> dict[str, Any]:
    kind, code, default = _ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, f"HTTP {status}")
    )
    return {"error": {"message": message or default, "type": kind, "param": None, "code": code}}


class LocalLLM(LoopbackServer):
    """OpenAI chat-completions subset on 127.0.0.1 answering each request with the next scripted Reply."""

    base_path = "/v1"

    def __init__(self, default: Reply | None = None) -> None:
        super().__init__()
        self.default = default if default is not None else Reply(content="{}")
        self.requests: list[dict[str, Any]] = []
        self._script: deque[Reply] = deque()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.in_flight = 0  # requests received and not yet answered
        self.max_in_flight = 0  # the most at once: reviews asked in parallel overlap here
        self.delay_by: Any = None  # body -> seconds: delays chosen by what is asked (e.g. the pair), not by order

    def script(self, *replies: Reply) -> None:
        """Queue replies, used one per request in order; the default answers once they run out."""
        with self._lock:
            self._script.extend(replies)

    # -- request handling ------------------------------------------------------------------------

    def _answer(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], Any, float]:
        """Status, headers, JSON payload and the delay before sending them; logs the request."""
        body: dict[str, Any] = {}
        if method == "POST" and path == "/v1/chat/completions":
            try:
                parsed = json.loads(raw or b"null")
            except (UnicodeDecodeError, json.JSONDecodeError):
                parsed = None
            if isinstance(parsed, dict):
                body = parsed
                status, extra, payload, delay_s = self._complete(body)
            else:
                body = {"_raw": raw.decode("utf-8", "replace")}
                status, extra, delay_s = 400, {}, 0.0
                payload = _error(400, "We could not parse the JSON body of your request.")
        elif method == "GET" and path == "/v1/models":
            status, extra, delay_s = 200, {}, 0.0
            payload = {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "local"}]}
        else:
            status, extra, delay_s = 404, {}, 0.0
            payload = _error(404, f"Invalid URL ({method} {path})")
        with self._lock:
            self.requests.append({**body, "_path": path, "_status": status, "_headers": headers})
        return status, {**_JSON, **extra}, payload, delay_s

    def _complete(self, body: dict[str, Any]) -> tuple[int, dict[str, str], Any, float]:
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return 400, {}, _error(400, "'messages' is a required property"), 0.0
        if body.get("stream"):  # fail loudly rather than send a body a streaming client can't parse
            return 400, {}, _error(400, "stream is not supported by the local test server"), 0.0
        fmt = body.get("response_format")
        fmt_type = fmt.get("type") if isinstance(fmt, dict) else None
        with self._lock:
            reply = self._script[0] if self._script else self.default
            # A rejected format leaves the reply queued, so the client's fallback request gets it.
            if (reply.reject_json_schema and fmt_type == "json_schema") or (
                reply.reject_json_object and fmt_type == "json_object"
            ):
                return 400, {}, _error(400, f"response_format {fmt_type} is not supported"), 0.0
            if self._script:
                self._script.popleft()
            n = next(self._ids)
        delay_s = max(reply.delay_s, self.delay_by(body) if self.delay_by else 0.0)
        if reply.status != 200:
            extra = {"Retry-After": "0"} if reply.status == 429 else {}
            return reply.status, extra, _error(reply.status, reply.content), delay_s
        message = {
            "role": "assistant",
            "content": None if reply.refusal is not None else reply.content,
            "refusal": reply.refusal,
            "annotations": [],
        }
        return (
            200,
            {},
            {
                "id": f"chatcmpl-local{n:06d}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", MODEL),
                "system_fingerprint": "fp_local",
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": reply.prompt_tokens,
                    "completion_tokens": reply.completion_tokens,
                    "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                },
            },
            delay_s,
        )


class _Handler(QuietHandler):
    def do_GET(self) -> None:
        owner = self.server.owner
        with owner._lock:
            owner.in_flight += 1
            owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
        try:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, out_headers, payload, delay_s = owner._answer(self.command, urlsplit(self.path).path, headers, raw)
            self.send(status, out_headers, json.dumps(payload).encode(), delay_s)
        finally:
            with owner._lock:
                owner.in_flight -= 1

    do_POST = do_PUT = do_DELETE = do_GET  # answered with OpenAI's 404 shape, not http.server's 501


LocalLLM.handler = _Handler
