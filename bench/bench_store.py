"""Candle validation and the Parquet store on one year of 1-minute candles (525,600 rows), against plain pandas.

The peer is what a user would write without this project: `DataFrame.to_parquet` and `pandas.read_parquet`
on the same frame. The ratio is the price of validation, the atomic write (fsync + rename) and the merge.

    .venv/bin/python bench/bench_store.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd

from morningstar_trader.candles import check_candles
from morningstar_trader.sample_data import SAMPLE_PAIRS, synthetic_candles
from morningstar_trader.store import CandleStore
from morningstar_trader.types import Bars

ROWS = 525_600


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    repeat = parser.parse_args().repeat
    raw, _ = synthetic_candles({"BTC/USDT": SAMPLE_PAIRS["BTC/USDT"]}, start="2024-01-01", periods=ROWS, timeframe="1m")
    raw = raw["BTC/USDT"]
    frame, _ = check_candles(raw, "1m")
    bars = Bars("synthetic", "BTC/USDT", "1m", frame)
    day = Bars("synthetic", "BTC/USDT", "1m", frame.iloc[-1440:])
    with tempfile.TemporaryDirectory() as d:
        store, peer = CandleStore(Path(d) / "ours"), Path(d) / "peer.parquet"

        def fresh_save():
            store.path("synthetic", "BTC/USDT", "1m").unlink(missing_ok=True)
            store.save(bars, "synthetic")

        rows = [
            ("validate (check_candles)", best_of(repeat, lambda: check_candles(raw, "1m")), None),
            ("save, new file", best_of(repeat, fresh_save), best_of(repeat, lambda: frame.to_parquet(peer))),
            ("save, merge one more day", best_of(repeat, lambda: store.save(day, "synthetic")), None),
            (
                "load all",
                best_of(repeat, lambda: store.load("synthetic", "BTC/USDT", "1m")),
                best_of(repeat, lambda: pd.read_parquet(peer)),
            ),
            (
                "load one week",
                best_of(repeat, lambda: store.load("synthetic", "BTC/USDT", "1m", "2024-06-01", "2024-06-08")),
                None,
            ),
        ]
    print(f"{ROWS:,} one-minute candles, best of {repeat}")
    print(f"{'operation':<28}{'ours (s)':>10}{'pandas (s)':>12}{'ratio':>8}{'rows/s':>14}")
    for name, ours, theirs in rows:
        ratio = f"{ours / theirs:.2f}x" if theirs else "-"
        print(f"{name:<28}{ours:>10.3f}{(f'{theirs:.3f}' if theirs else '-'):>12}{ratio:>8}{ROWS / ours:>14,.0f}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
