"""What a cycle reads from its state store, as the store's history grows: one row per history length (equity marks,
with an order and a fill every 6th cycle, as the soak has them), the per-call time of each read a paper or live cycle
makes, the whole-history read it replaced beside it (measured in the same process on the same file).

    .venv/bin/python bench/bench_store_history.py [--history 1000,10000,50000] [--repeat 200]

- monitoring's snapshot: `equity_curve()` (every mark) before, `equity_bounds()` (first, peak, last) now;
- reconciliation's external orders: `orders()` (every order) before, `known_exchange_ids(venue's open orders)` now;
- the stages' open orders: `open_orders()` (`status IN` the open ones, through the status index).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from morningstar_trader.portfolio import PortfolioStore


def filled_store(path: Path, n: int) -> PortfolioStore:
    "A store with `n` hourly equity marks, an order and its fill every 6th mark, one order still open."
    store = PortfolioStore(path, initial_cash=100_000.0)
    times = pd.date_range("2020-01-01", periods=n, freq="1h", tz="UTC")
    with store._tx() as db:
        db.executemany(
            "INSERT INTO equity VALUES (?, ?, ?, ?)",
            ((str(t), 100_000.0 + (i % 977) - i * 0.01, 90_000.0, 1_000.0) for i, t in enumerate(times)),
        )
        orders = [
            (f"ms-{i}", "BTC/USDT", "buy", 0.1, "market", None, "open", "filled", 0.1, str(10_000 + i), "", str(t), "")
            for i, t in enumerate(times[::6])
        ]
        db.executemany("INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", orders)
        db.executemany(
            "INSERT INTO fills VALUES (?,?,?,?,?,?,?,?,?)",
            ((f"t-{o[0]}", o[0], o[1], o[2], 0.1, 50_000.0, 0.5, o[11], 0.0) for o in orders),
        )
        db.execute(
            "INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            ("ms-open", "ETH/USDT", "buy", 1.0, "limit", 1.0, "open", "submitted", 0.0, "99", "", str(times[-1]), ""),
        )
    return store


def per_call_ms(fn, repeat: int) -> float:
    fn()  # the first call prepares the statement
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--history", default="1000,10000,50000", help="history lengths (cycles), comma-separated")
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    print(f"load average at the start: {os.getloadavg()[0]:.2f} (2 cores shared)")
    print(
        "| cycles of history | equity_curve ms | equity_bounds ms | orders() ms | known_exchange_ids ms "
        "| open_orders ms |"
    )
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for n in (int(x) for x in args.history.split(",")):
            store = filled_store(Path(d) / f"h{n}.sqlite", n)
            curve, bounds = store.equity_curve(), store.equity_bounds()
            assert (curve["equity"].iloc[0], curve["equity"].max(), curve.index[-1]) == (
                bounds["equity"].iloc[0],
                bounds["equity"].max(),
                bounds.index[-1],
            )
            ms = [
                per_call_ms(f, args.repeat)
                for f in (
                    store.equity_curve,
                    store.equity_bounds,
                    lambda: set(store.orders()["exchange_order_id"].dropna()),
                    lambda: store.known_exchange_ids(["99", "123456"]),
                    store.open_orders,
                )
            ]
            print(f"| {n:,} | " + " | ".join(f"{m:.3f}" for m in ms) + " |")
            store.close()
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
