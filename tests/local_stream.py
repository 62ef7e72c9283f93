"""A Binance-compatible kline websocket on 127.0.0.1 for the test suite (the `websockets` library's asyncio server).

It speaks what `ccxt.pro.binance`'s `watch_ohlcv_for_symbols` uses: a client connects to `/ws/<n>`, sends
`{"method": "SUBSCRIBE", "params": ["btcusdt@kline_1h", ...], "id": N}` and is answered `{"result": null, "id": N}`;
then every kline of a subscribed stream reaches it in the combined-stream shape
`{"stream": "btcusdt@kline_1h", "data": {"e": "kline", "E": ..., "s": "BTCUSDT", "k": {"t", "T", "s", "i", "o", "c",
"h", "l", "v", "x", ...}}}`, numbers as decimal text, `x: true` on the candle's final (closed) update. The test pushes
klines (`kline`, `close_bars`) and drops every connection (`drop`) to play a network failure.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, Self

import pandas as pd
from websockets.asyncio.server import ServerConnection, serve

__all__ = ["LocalKlineStream"]


class LocalKlineStream:
    """Binance's spot kline stream on a free loopback port; `url` is what `exchange.ws_url` takes."""

    def __init__(self, interval: str = "1h") -> None:
        self.interval, self.url = interval, ""
        self.subscriptions: list[list[str]] = []  # every SUBSCRIBE's params, in order
        self.connections = 0  # connections accepted so far
        self._clients: dict[ServerConnection, set[str]] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="LocalKlineStream", daemon=True)
        self._server: Any = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        self._clients[ws] = set()
        try:
            async for text in ws:
                msg = json.loads(text)
                if msg.get("method") == "SUBSCRIBE":
                    self._clients[ws] |= set(msg["params"])
                    self.subscriptions.append(list(msg["params"]))
                    await ws.send(json.dumps({"result": None, "id": msg["id"]}))
        except Exception:  # a dropped connection ends here; the test sees it through `connections`
            pass
        finally:
            self._clients.pop(ws, None)

    def _call(self, coro) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def subscribed(self, stream: str) -> int:
        "How many open connections subscribe to `stream` (e.g. btcusdt@kline_1h)."
        return sum(stream in s for s in list(self._clients.values()))

    def _text(self, symbol: str, open_time: pd.Timestamp, row: dict | tuple, closed: bool) -> tuple[str, str]:
        "(stream name, message) of one kline in the combined-stream shape."
        market = symbol.replace("/", "")
        stream = f"{market.lower()}@kline_{self.interval}"
        t = int(open_time.timestamp() * 1000)
        step = int(pd.Timedelta(self.interval).total_seconds() * 1000)
        values = row if isinstance(row, dict) else dict(zip("ohlcv", (repr(float(x)) for x in row)))
        k = {
            "t": t,
            "T": t + step - 1,
            "s": market,
            "i": self.interval,
            "f": 1,
            "L": 2,
            **values,
            "n": 2,
            "x": closed,
            "q": "0",
            "V": "0",
            "Q": "0",
            "B": "0",
        }
        return stream, json.dumps({"stream": stream, "data": {"e": "kline", "E": t + step, "s": market, "k": k}})

    async def _send(self, messages: list[tuple[str, str]]) -> int:
        sent = 0
        for stream, text in messages:
            for ws in [ws for ws, subs in list(self._clients.items()) if stream in subs]:
                try:
                    await ws.send(text)
                    sent += 1
                except Exception:
                    pass  # a connection closing right now: the test's own business
        return sent

    def kline(self, symbol: str, open_time: pd.Timestamp, row: dict | tuple, closed: bool) -> int:
        """Send one kline of `symbol` (BTC/USDT) opening at `open_time` to its subscribers, `row` its open, high, low,
        close, volume (a dict may hold any text or number, to play a bad candle); how many connections got it."""
        return self._call(self._send([self._text(symbol, open_time, row, closed)]))

    def close_bars(
        self, data: dict[str, pd.DataFrame], open_time: pd.Timestamp, *, forming: bool = True, wait: bool = True
    ) -> None:
        """The exchange at a bar close: each pair's candle opening at `open_time` closes (`x: true`), and with `forming`
        the next one starts (`x: false`, its first prices). `wait` False: return at once, the server sends meanwhile."""
        messages = []
        for pair, df in data.items():
            c = df.loc[open_time]
            messages.append(
                self._text(pair, open_time, (c["open"], c["high"], c["low"], c["close"], c["volume"]), True)
            )
            nxt = open_time + pd.Timedelta(self.interval)
            if forming and nxt in df.index:
                o = df.loc[nxt, "open"]
                messages.append(
                    self._text(pair, nxt, (o, o * 1.5, o * 0.5, o * 1.4, 1.0), False)
                )  # far from its final values
        future = asyncio.run_coroutine_threadsafe(self._send(messages), self._loop)
        if wait:
            future.result(timeout=10)

    def drop(self) -> None:
        "Close every client connection (a network failure); the server keeps listening."

        async def close_all() -> None:
            for ws in list(self._clients):
                await ws.close(code=1011, reason="dropped by the test")

        self._call(close_all())

    def start(self) -> Self:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            await self._server.wait_closed()

        self._call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
