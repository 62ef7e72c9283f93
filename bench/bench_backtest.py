"""Backtest engine speed: SMA(10, 20) cross on one year of 1-minute bars (525,600), this engine vs vectorbt's
`Portfolio.from_signals` and backtesting.py.

Same process, same synthetic candles, 1 unit, 0.1 % commission, orders at the next open. Each engine computes the
same things from the candles: the two averages (pandas' rolling mean arithmetic, so a crossover decided on a near-tie
is decided the same way), the trades, the equity curve at every close, and total return, Sharpe, Sortino, max
drawdown, win rate and profit factor. Ours is timed twice: the default call a user makes (`run_rule_backtest` with
its baselines: buy & hold, vol-targeted buy & hold, TSMOM, buy & hold at equal exposure, and the statistics against
each) and the engine alone (`benchmarks=False`, the work the peers do). Timed apart:
vectorbt's numba compile (its first call, on 2,000 bars) and our first calls (numba compiles our functions, or loads
them from its disk cache). vectorbt runs on the bars without their time zone (with one, its result wrapping converts
every timestamp to an object, seconds per call). The trades that close on signals are checked identical in all three
engines before any number is printed. Ours and vectorbt take turns, `--repeat` rounds, best of each. Peak RSS is read
after the rounds (vectorbt's included), before backtesting.py's.

    .venv/bin/python bench/bench_backtest.py [--bars 525600] [--repeat 5] [--skip-vbt] [--skip-bt]

`make bench-setup` installs vectorbt.
"""

from __future__ import annotations

import argparse
import os
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


def interleaved(repeat: int, runs: dict) -> tuple[dict, dict]:
    """({name: seconds of each round}, {name: last result}), the runs taking turns: a burst of load on the shared
    machine falls on every engine alike."""
    times, outs = {name: [] for name in runs}, {}
    for _ in range(repeat):
        for name, fn in runs.items():
            t = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t)
    return times, outs


def crossings(close: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    "(up, down) at each close: SMA(10) crossing strictly above / below SMA(20), backtesting.lib.crossover's rule."
    fast, slow = close.rolling(10).mean().to_numpy(), close.rolling(20).mean().to_numpy()
    up = np.r_[False, fast[:-1] < slow[:-1]] & (fast > slow)
    down = np.r_[False, fast[:-1] > slow[:-1]] & (fast < slow)
    return up, down


def vectorbt_run(bars: pd.DataFrame):
    "vectorbt: signals decided at the close, filled at the next open (shifted one bar, priced at the open)."
    import vectorbt as vbt

    up, down = crossings(bars["close"])
    nxt = lambda a: np.r_[False, a[:-1]]
    # long on a cross up, short on a cross down, each closing the other; never short of cash: ours lets cash go negative
    pf = vbt.Portfolio.from_signals(
        bars["close"],
        entries=nxt(up),
        exits=nxt(down),
        short_entries=nxt(down),
        short_exits=nxt(up),
        price=bars["open"].to_numpy(),
        size=1.0,
        fees=0.001,
        init_cash=1e9,
        freq="1min",
    )
    trades = pf.trades
    stats = {
        "total_return": pf.total_return(),
        "sharpe": pf.sharpe_ratio(),
        "sortino": pf.sortino_ratio(),
        "max_drawdown": pf.max_drawdown(),
        "win_rate": trades.win_rate(),
        "profit_factor": trades.profit_factor(),
    }
    return trades.records, pf.value(), stats


def backtesting_run(bars: pd.DataFrame):
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

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Backtest(bars.rename(columns=str.title), Peer, cash=1e9, commission=0.001).run()._trades


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=525_600)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-vbt", action="store_true")
    parser.add_argument("--skip-bt", action="store_true", help="leave backtesting.py out (about a minute)")
    args = parser.parse_args()
    raw, _ = synthetic_candles(
        {"BTC/USDT": SAMPLE_PAIRS["BTC/USDT"]}, start="2024-01-01", periods=args.bars, timeframe="1m"
    )
    bars = raw["BTC/USDT"].set_index("timestamp")
    naive = bars.tz_localize(None)
    load = os.getloadavg()[0]

    def ours(benchmarks: bool):
        return run_rule_backtest(bars, SmaCross(10, 20), size=1, fee=0.001, cash=1e9, benchmarks=benchmarks)

    first_s, _ = best(1, lambda: ours(False))  # first call: numba's compile (or its disk cache) and imports, apart
    first_full_s, _ = best(1, lambda: ours(True))  # then the baselines' compiled functions, apart too
    runs = {"full": lambda: ours(True), "core": lambda: ours(False)}
    if not args.skip_vbt:
        compile_s, _ = best(1, lambda: vectorbt_run(naive.iloc[:2_000]))
        runs["vbt"] = lambda: vectorbt_run(naive)
    rounds, outs = interleaved(args.repeat, runs)
    secs = {name: min(ts) for name, ts in rounds.items()}
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mine = outs["full"].trades[outs["full"].trades["exit_reason"] == "signal"]
    rows = [
        ("ours: default call, with baselines", secs["full"]),
        ("ours: engine alone, benchmarks=False", secs["core"]),
    ]
    if not args.skip_vbt:
        vbt_s, (records, _, _) = secs["vbt"], outs["vbt"]
        closed = records[records["status"] == 1]  # vectorbt counts the position left open as a trade too
        same = len(closed) == len(mine) and np.array_equal(
            naive.index[closed["entry_idx"]], mine["entry_time"].dt.tz_localize(None)
        )
        same = same and np.array_equal(closed["entry_price"], mine["entry_price"])
        if not (same and np.array_equal(closed["exit_price"], mine["exit_price"])):
            raise SystemExit("vectorbt's trade list differs: no timing is reported")
        rows.append(("vectorbt 1.2 Portfolio.from_signals", vbt_s))
    if not args.skip_bt:
        bt_s, peer = best(1, lambda: backtesting_run(naive))
        same = len(mine) == len(peer) and np.array_equal(mine["entry_price"], peer["EntryPrice"])
        same = same and np.array_equal(mine["exit_price"], peer["ExitPrice"])
        if not (same and np.array_equal(mine["entry_time"].dt.tz_localize(None), peer["EntryTime"])):
            raise SystemExit("backtesting.py's trade list differs: no timing is reported")
        rows.append(("backtesting.py 0.6", bt_s))

    print(f"SMA(10, 20) cross on {args.bars:,} one-minute bars, {len(mine):,} trades, identical in every engine")
    print(
        f"best of {args.repeat}, the engines taking turns (backtesting.py: 1 run); "
        f"load average {load:.1f} on {os.cpu_count()} cores"
    )
    peers = [name for name, _ in rows[2:]]
    print(f"{'engine':<40}{'seconds':>10}{'bars/s':>14}" + "".join(f"{'x ' + p.split()[0]:>18}" for p in peers))
    for name, s in rows:
        ratios = "".join(f"{dict(rows)[p] / s:>17.1f}x" for p in peers)
        print(f"{name:<40}{s:>10.3f}{args.bars / s:>14,.0f}{ratios}")
    if not args.skip_vbt:
        each = {k: np.median(np.divide(rounds["vbt"], rounds[k])) for k in ("full", "core")}
        print(
            f"median over the {args.repeat} rounds of vectorbt's time / ours in the same round: "
            f"{each['full']:.1f}x the default call (with baselines), {each['core']:.1f}x the engine alone"
        )
        print(f"vectorbt's numba compile and first run on 2,000 bars, apart: {compile_s:.2f} s")
    print(
        "ours: first calls, apart (numba compiles its functions, or loads them from its disk cache): "
        f"engine alone {first_s:.2f} s, then the default call {first_full_s:.2f} s"
    )
    print(f"peak RSS after the rounds: {rss_mib:.0f} MiB")
    print(f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
