"""A hostile or broken HTTP source is bounded while it is read, not after (issue 26): an answer far over the 50 MB limit
is refused once the limit is passed, not read whole first; a server that trickles one byte at a time (each read within
the timeout) is cut off at the source's deadline. A local server on 127.0.0.1 streams both and counts what it could
send before the client went away."""

from __future__ import annotations

import threading

import pytest
from loopback import LoopbackServer, QuietHandler

from morningstar_trader.alt_providers import MAX_BODY_BYTES, HttpClient
from morningstar_trader.config import RetrySettings
from morningstar_trader.types import MorningstarError

CHUNK = 1 << 20


class Streamer(LoopbackServer):
    "GET /huge: up to `huge` bytes in 1 MiB chunks; GET /trickle: one byte at a time, `trickle` of them, slowly."

    def __init__(self, huge: int = 4 * MAX_BODY_BYTES, trickle: int = 10_000, pause_s: float = 0.05) -> None:
        super().__init__()
        self.huge, self.trickle, self.pause_s = huge, trickle, pause_s
        self.sent = 0
        self.done = threading.Event()  # set when a whole answer went out


class _Handler(QuietHandler):
    def do_GET(self) -> None:
        owner = self.server.owner
        total = owner.huge if self.path.startswith("/huge") else owner.trickle
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(total))
        self.end_headers()
        try:
            while owner.sent < total and not owner._stopping.is_set():
                if self.path.startswith("/huge"):
                    n = min(CHUNK, total - owner.sent)
                    self.wfile.write(b" " * n)
                else:
                    n = 1
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    owner._stopping.wait(owner.pause_s)
                owner.sent += n
            if owner.sent >= total:
                owner.done.set()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: what it was meant to do


Streamer.handler = _Handler
ONCE = RetrySettings(max_attempts=1, initial_delay_s=0.01, max_delay_s=0.02)


def test_an_answer_over_the_limit_is_refused_while_it_streams_in():
    with Streamer() as server:
        client = HttpClient(ONCE, timeout_s=10)
        with pytest.raises(MorningstarError, match=f"over {MAX_BODY_BYTES:,} bytes: not read further"):
            client.get("huge feed", server.base_url + "/huge")
        assert not server.done.is_set() and server.sent < 2 * MAX_BODY_BYTES  # cut off, not read whole first


def test_a_source_that_trickles_bytes_is_cut_off_at_its_deadline():
    with Streamer() as server:
        client = HttpClient(ONCE, timeout_s=10, deadline_s=1.0)  # each byte comes well within the read timeout
        with pytest.raises(MorningstarError, match="not answered within 1 s"):
            client.get("slow feed", server.base_url + "/trickle")
        assert not server.done.is_set()  # the server had much more to send: the client did not wait for it
