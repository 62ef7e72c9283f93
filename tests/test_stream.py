"""The candle stream (`exchange.candles: stream`): ccxt.pro's real Binance client against a local kline websocket
(`local_stream.py`) beside the local REST exchange. Closed candles arrive and the cycle decides on them without a candle
request; a forming candle (`x: false`) is never used; a dropped connection reconnects and REST stands in meanwhile; a
gap the stream missed is filled over REST. The stream's cycles decide exactly as REST cycles over the same closes."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, candles
from local_exchange import LocalExchange
from local_stream import LocalKlineStream

from morningstar_trader.candles import validated_bars
from morningstar_trader.config import ExchangeSettings, Settings, load_secrets
from morningstar_trader.cycle import build_context, run_cycle
from morningstar_trader.market_data import ApiManager
from morningstar_trader.stream import KlineStream
from morningstar_trader.training import train_model

PAIRS = ("BTC/USDT", "ETH/USDT")
FIRST = 1_800  # the first cycle's close: the open of bar FIRST


def until(what, timeout_s: float = 10.0) -> None:
    "Wait for `what()` to be true (the stream's thread works on its own time)."
    deadline = time.monotonic() + timeout_s
    while not what():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    data = candles(2_000, end="2024-06-01", pairs=PAIRS)
    train = {
        p: validated_bars(df.iloc[:1700].reset_index(names="timestamp"), "synthetic", p, "1h")[0]
        for p, df in data.items()
    }
    train_model(Settings(**TINY), train, root / "models" / "default" / "v1", verbose=0)
    with LocalExchange(data, "1h") as rest, LocalKlineStream("1h") as ws:
        yield root, rest, ws, data


def _context(root, rest, ws, state: str, **exchange):
    s = Settings(
        **TINY,
        mode="paper",
        pairs=PAIRS,
        exchange={"api_url": rest.base_url, "ws_url": ws.url, "timeout_ms": 2000, **exchange},
        retry={"max_attempts": 2, "initial_delay_s": 0.01, "max_delay_s": 0.02},
        paths={"models_dir": root / "models", "state_dir": root / state, "logs_dir": root / "logs"},
    )
    return build_context(s, load_secrets({}), run_id=state)


def _close(rest, data, k: int) -> pd.Timestamp:
    "The exchange's clock one second after the close of bar k - 1 (the open of bar k)."
    now = data["BTC/USDT"].index[k] + pd.Timedelta(seconds=1)
    rest.set_now(int(now.timestamp() * 1000))
    return now


def _klines_asked(rest, since: int) -> int:
    return sum(r["path"] == "/api/v3/klines" for r in rest.requests[since:])


def _same_as_data(ctx, data) -> None:
    "Every candle the cycle keeps equals the exchange's, with none missing."
    for p, c in ctx.candles.items():
        want = data[p].loc[c.end - (len(c) - 1) * pd.Timedelta(hours=1) : c.end]
        assert len(want) == len(c) and (want.index.as_unit("ns").asi8 == c.times).all()
        np.testing.assert_array_equal(want[["open", "high", "low", "close", "volume"]].to_numpy(), c.ohlcv)


def test_the_stream_keeps_closed_candles_only_and_refuses_bad_ones(world):
    root, rest, ws, data = world
    api = ApiManager(ExchangeSettings(api_url=rest.base_url))
    stream = KlineStream(
        ExchangeSettings(api_url=rest.base_url, ws_url=ws.url), PAIRS, "1h", markets=api.load_markets()
    ).start()
    try:
        until(lambda: ws.subscribed("ethusdt@kline_1h") == 1)
        bar = data["BTC/USDT"].index[1900]
        ws.kline("BTC/USDT", bar, (1, 9, 0.5, 2, 10), closed=False)  # forming: never kept
        ws.kline(
            "ETH/USDT", bar, {"o": "1", "h": "0.9", "l": "0.5", "c": "1", "v": "1"}, closed=True
        )  # high below open
        ws.close_bars(data, bar)
        until(lambda: len(stream.closed("ETH/USDT", bar.value)[0]) == 1)
        for p in PAIRS:
            times, ohlcv = stream.closed(p, bar.value)
            assert times.tolist() == [bar.value]
            np.testing.assert_array_equal(
                ohlcv[0], data[p].loc[bar, ["open", "high", "low", "close", "volume"]].to_numpy()
            )
        assert [(p, why) for p, _, why in stream.rejected] == [("ETH/USDT", "high below open/close/low")]
        assert stream.wait(PAIRS, bar.value, 0.0) and not stream.wait(PAIRS, (bar + pd.Timedelta(hours=1)).value, 0.05)
    finally:
        stream.stop()
    assert stream.connected is False


def test_cycles_trade_on_streamed_closes_as_on_rest_and_rest_fills_what_the_stream_missed(world):
    root, rest, ws, data = world
    streamed = _context(root, rest, ws, "state-stream", candles="stream", stream_wait_ms=300)
    polled = _context(root, rest, ws, "state-rest")
    reports, rest_reports = [], []
    try:
        _cycles(rest, ws, data, streamed, polled, reports, rest_reports)
    finally:
        if streamed.stream is not None:
            streamed.stream.stop()


def _cycles(rest, ws, data, streamed, polled, reports, rest_reports) -> None:

    def cycle(k: int, publish: bool = True) -> int:
        "One close of bar k - 1 in both accounts; the candle requests the streamed one made."
        now = _close(rest, data, k)
        if publish:
            ws.close_bars(data, data["BTC/USDT"].index[k - 1])
        seen = len(rest.requests)
        reports.append(run_cycle(streamed, now))
        asked = _klines_asked(rest, seen)
        rest_reports.append(run_cycle(polled, now))
        return asked

    assert cycle(FIRST, publish=False) == 2  # the first close: the history over REST, the stream starts
    until(lambda: ws.subscribed("btcusdt@kline_1h") == 1 and streamed.stream.connected)
    assert [cycle(k) for k in range(FIRST + 1, FIRST + 11)] == [0] * 10  # closed candles come from the stream alone

    # a candle's last forming update, its close late: the cycle waits a little, then asks REST; the forming values never
    # count
    now = _close(rest, data, FIRST + 11)
    bar = data["BTC/USDT"].index[FIRST + 10]
    for p in PAIRS:
        ws.kline(p, bar, (1.0, 1e6, 0.5, 5e5, 1.0), closed=False)
    seen = len(rest.requests)
    reports.append(run_cycle(streamed, now))
    assert _klines_asked(rest, seen) == 2 and reports[-1].bar == bar
    rest_reports.append(run_cycle(polled, now))
    _same_as_data(streamed, data)

    # the connection drops and the next close is lost with it: REST stands in, no bar is lost; then the stream is back
    connections = ws.connections
    ws.drop()
    until(lambda: streamed.stream.failures >= 1)
    assert cycle(FIRST + 12, publish=False) == 2
    until(lambda: ws.connections > connections and ws.subscribed("ethusdt@kline_1h") == 1 and streamed.stream.connected)
    assert cycle(FIRST + 13) == 0

    # three closes the stream never sent (nor did any cycle run): the next close fills them over REST, one request a
    # pair
    for k in (FIRST + 14, FIRST + 15, FIRST + 16):
        _close(rest, data, k)
    assert cycle(FIRST + 17) == 2
    assert cycle(FIRST + 18) == 0
    _same_as_data(streamed, data)

    assert [r.bar for r in reports] == [
        data["BTC/USDT"].index[k - 1] for k in [*range(FIRST, FIRST + 14), FIRST + 17, FIRST + 18]
    ]
    for a, b in zip(reports, rest_reports):  # the same decisions as the cycles that asked REST for every candle
        cols = ["pair", "action", "verdict", "size"]
        pd.testing.assert_frame_equal(a.pairs[cols], b.pairs[cols])
    assert not any((r.pairs["action"] == "skipped").any() for r in reports)
    journal = pd.DataFrame(streamed.store.journal_rows())
    assert len(journal) == 2 * len(reports)
