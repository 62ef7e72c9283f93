"""A webhook receiver on 127.0.0.1 for the alert tests: it records every POST (path, JSON body) and answers 200, or 503
for the first `fail_first` requests; while `hold` is cleared it keeps each request waiting (a slow or hung receiver),
so a test can show that nothing waited for it. Telegram's Bot API is the same shape: POST /bot<token>/sendMessage."""

from __future__ import annotations

import json
import threading
from typing import Any

from loopback import LoopbackServer, QuietHandler


class LocalHooks(LoopbackServer):
    def __init__(self, fail_first: int = 0, hold: bool = False) -> None:
        super().__init__()
        self.fail_first = fail_first
        self.received: list[dict[str, Any]] = []  # the requests answered 200
        self.attempts = 0
        self.release = threading.Event()  # cleared: requests wait until it is set (or the server stops)
        if not hold:
            self.release.set()
        self.waiting = threading.Event()  # set once a request is being held
        self._lock = threading.Lock()

    def _answer(self, path: str, body: bytes) -> int:
        if not self.release.is_set():
            self.waiting.set()
            while not (self.release.wait(0.05) or self._stopping.is_set()):
                pass
        with self._lock:
            self.attempts += 1
            if self.attempts <= self.fail_first:
                return 503
            self.received.append({"path": path, "json": json.loads(body or b"null")})
            return 200


class _Handler(QuietHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status = self.server.owner._answer(self.path, body)
        self.send(status, {"Content-Type": "application/json"}, b'{"ok": true}' if status == 200 else b"{}")


LocalHooks.handler = _Handler
