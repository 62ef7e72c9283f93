"""Start/stop plumbing shared by the test servers: an HTTP server on 127.0.0.1, in a daemon thread, on a free port."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


class OwnedServer(ThreadingHTTPServer):
    """An HTTP server on a free loopback port that knows the test server object answering its requests."""

    def __init__(self, owner: LoopbackServer, handler: type[BaseHTTPRequestHandler], port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), handler)  # port 0: the OS picks a free one
        self.owner = owner


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that answers through `send` and leaves logging to the test server's `requests`."""

    server: OwnedServer

    def send(self, status: int, headers: dict[str, str], body: bytes, delay_s: float = 0.0) -> None:
        if delay_s:
            self.server.owner._stopping.wait(delay_s)
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first, which is what a slow answer is for

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LoopbackServer:
    """Base of the local test servers; a subclass names its `handler`, which reaches it as `self.server.owner`."""

    base_path = ""  # appended to base_url, e.g. "/v1"
    handler: type[QuietHandler]

    def __init__(self) -> None:
        self.base_url = ""
        self._stopping = threading.Event()  # set on stop(), so handlers sleeping for a "slow" answer return at once
        self._server: OwnedServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0  # after the first start, a restart binds the same port: clients find the server again

    def start(self) -> Self:
        if self._server is None:
            self._stopping.clear()
            self._server = OwnedServer(self, self.handler, self._port)
            self._port = self._server.server_address[1]
            self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}{self.base_path}"
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=type(self).__name__, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
