"""Sweeps: 100 SMA parameter pairs on 525,600 one-minute bars against vectorbt, and a decision sweep of a model.

1. `run_sweep` of SmaCross over 10 fast x 10 slow windows (1 unit, 0.1 % fee, long and short, fills at the next
   open) on a local cluster of 2 worker processes, against the same 100 backtests run one by one in this process
   and against vectorbt's broadcast `Portfolio.from_signals` (all 100 columns at once, numba-compiled; its compile
   time is measured apart on a small warm-up). vectorbt's statistics are not ours (it fills and marks its own way):
   the trade counts are printed side by side as a sanity check, never compared exactly.
2. A decision sweep of the model (default architecture, untrained: speed does not depend on the weights) on
   10 pairs x 8,760 1h bars: `--configs` points of decision.min_confidence x risk.risk_per_trade x
   execution.order_type, the simulated reviewer on; predictions computed once (the cache), then each point through
   the kernel. Wall time on the cluster, and the same points one by one in this process: the serial/parallel ratio.

    nice -n 10 .venv/bin/python bench/bench_sweep.py [--bars 525600] [--configs 100] [--workers 2] [--serial-points N]
                                                      [--skip-vbt] [--skip-sma] [--skip-model]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time

import numpy as np
import pandas as pd

from morningstar_trader.config import Settings
from morningstar_trader.sample_data import SAMPLE_PAIRS, SamplePair, synthetic_candles
from morningstar_trader.sweep import backtest_once, make_strategy, run_sweep, with_overrides

FAST, SLOW = [5, 8, 10, 12, 15, 20, 25, 30, 40, 50], [60, 80, 100, 120, 150, 180, 200, 240, 300, 400]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def cpu_timed(fn):
    "(wall seconds, this process's CPU seconds, result)"
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def sma_part(args) -> list[tuple]:
    raw, _ = synthetic_candles(
        {"BTC/USDT": SAMPLE_PAIRS["BTC/USDT"]}, start="2024-01-01", periods=args.bars, timeframe="1m"
    )
    bars = raw["BTC/USDT"].set_index("timestamp")
    settings = Settings(
        exchange={"market_type": "swap"}, costs={"taker_fee": 0.001, "maker_fee": 0.001, "slippage_bps": 0}
    )
    grid = {"fast": FAST, "slow": SLOW}
    rows = []
    with tempfile.TemporaryDirectory() as d:
        wall, res = timed(
            lambda: run_sweep(
                {"BTC/USDT": bars},
                "sma_cross",
                grid,
                settings=settings,
                out=d,
                size=1.0,
                scheduler=args.scheduler,
                progress=False,
            )
        )
    assert res.failed == 0
    rows.append(
        (f"run_sweep on the running cluster of {args.workers} processes", wall, float(res.table["cpu_s"].sum()))
    )
    serial, serial_cpu, _ = cpu_timed(
        lambda: [
            backtest_once(
                {"BTC/USDT": bars},
                make_strategy("sma_cross", {"fast": f, "slow": s}, settings),
                settings,
                size=1.0,
                cash=10_000.0,
            )
            for f, s in itertools.product(FAST, SLOW)
        ]
    )
    rows.append(("the same 100 backtests one by one, in this process", serial, serial_cpu))
    ours_trades = res.table.set_index(["fast", "slow"])["trades"]
    if not args.skip_vbt:
        import vectorbt as vbt

        def vbt_run(frame):
            close, open_ = frame["close"], frame["open"]
            fast = vbt.MA.run(close, FAST, short_name="fast").ma
            slow = vbt.MA.run(close, SLOW, short_name="slow").ma
            f = pd.concat([fast.iloc[:, [i]] for i in range(len(FAST)) for _ in SLOW], axis=1).to_numpy()
            s = pd.concat([slow.iloc[:, [j]] for _ in FAST for j in range(len(SLOW))], axis=1).to_numpy()
            up = (f > s) & np.vstack([np.zeros((1, f.shape[1]), bool), f[:-1] < s[:-1]])
            down = (f < s) & np.vstack([np.zeros((1, f.shape[1]), bool), f[:-1] > s[:-1]])
            cols = pd.MultiIndex.from_tuples(list(itertools.product(FAST, SLOW)), names=["fast", "slow"])
            # decided at the close, filled at the next open: the signals shifted one bar, priced at the open
            shift = lambda a: pd.DataFrame(
                np.vstack([np.zeros((1, a.shape[1]), bool), a[:-1]]), index=frame.index, columns=cols
            )
            # long on a cross up, short on a cross down, each closing the other: our SmaCross's reversals
            pf = vbt.Portfolio.from_signals(
                close,
                entries=shift(up),
                exits=shift(down),
                short_entries=shift(down),
                short_exits=shift(up),
                price=open_.to_numpy()[:, None],
                size=1.0,
                fees=0.001,
                init_cash=1e12,
                freq="1min",
            )  # never short of cash: ours lets cash go negative
            return pf.total_return(), pf.trades.count()

        cold, cold_cpu, _ = cpu_timed(lambda: vbt_run(bars.iloc[:2_000]))
        warm, warm_cpu, (ret, counts) = cpu_timed(lambda: vbt_run(bars))
        rows.append(("vectorbt Portfolio.from_signals, 100 columns at once (compiled)", warm, warm_cpu))
        rows.append(("  vectorbt's numba compile + first run on 2,000 bars", cold, cold_cpu))
        both = pd.DataFrame({"ours": ours_trades, "vectorbt": counts.to_numpy()}, index=ours_trades.index)
        print("trades per point (first 5; vectorbt counts its own way):\n" + both.head().to_string())
    return rows


def model_part(args) -> list[tuple]:
    from morningstar_trader.backtest import ModelStrategy
    from morningstar_trader.candles import validated_bars
    from morningstar_trader.config import ModelSettings
    from morningstar_trader.features import DataPreparation
    from morningstar_trader.model import EnhancedHybridModel, MorningstarModel

    settings = Settings(decision={"min_confidence": 0.34}, llm={"mode": "simulated"}, exchange={"market_type": "swap"})
    specs = {f"P{i}/USDT": SamplePair(100.0 * (i + 1), 1.0 + 0.1 * i, 1_000.0) for i in range(10)}
    raw, _ = synthetic_candles(specs, periods=8_760, seed=3)
    frames = {p: validated_bars(df, "synthetic", p, "1h")[0].frame for p, df in raw.items()}
    prep = DataPreparation(settings.features, "1h")
    prep = prep.fit([prep.frame(validated_bars(raw["P0/USDT"], "synthetic", "P0/USDT", "1h")[0])])
    network = EnhancedHybridModel(
        prep.settings.window, len(prep.technical_names), len(prep.context_names), ModelSettings()
    ).build()
    model = MorningstarModel(
        network, prep, {"heads": list(ModelSettings().heads), "target_scale": {"volatility": 0.01, "sl_tp": 0.01}}
    )
    full = {
        "decision.min_confidence": [0.34, 0.36, 0.38, 0.40, 0.42],
        "risk.risk_per_trade": [0.005, 0.01, 0.015, 0.02, 0.03],
        "execution.order_type": ["market", "limit"],
        "risk.max_open_positions": [3, 6],
    }
    with tempfile.TemporaryDirectory() as d:
        wall, res = timed(
            lambda: run_sweep(
                frames,
                "model",
                full,
                settings=settings,
                out=d,
                model=model,
                random_n=args.configs,
                scheduler=args.scheduler,
                progress=False,
            )
        )
        assert res.failed == 0, res.table["error"].dropna().iloc[0]
        points = res.table[list(full)].to_dict("records")
        from morningstar_trader.sweep import predictions_for

        cache, _ = timed(lambda: predictions_for(model, frames, None))
    tables = predictions_for(model, frames, None)
    some = points[: args.serial_points or len(points)]

    def serial():
        for p in some:
            s = with_overrides(settings, p)
            from morningstar_trader.sweep import CachedModelStrategy, PredictionsOnly

            backtest_once(
                frames,
                CachedModelStrategy(
                    PredictionsOnly(model.prep, model.metadata), s.decision.min_confidence, tables=tables
                ),
                s,
                size=None,
                cash=10_000.0,
            )

    one, _ = timed(serial)
    del ModelStrategy
    return [
        (
            f"decision sweep, {len(points)} points, 10 pairs x 8,760 1h bars, {args.workers} processes (predictions "
            "included)",
            wall,
        ),
        ("  of which: the predictions, once (features + batched inference, 10 pairs)", cache),
        ("  the tasks' own CPU time, summed over the workers", float(res.table["cpu_s"].sum())),
        (f"{len(some)} of the same points one by one in this process (predictions cached)", one),
    ], ((wall - cache) / len(points), one / len(some))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=525_600)
    parser.add_argument("--configs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-vbt", action="store_true")
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--skip-sma", action="store_true")
    parser.add_argument("--serial-points", type=int, default=0, help="run only the first N points one by one (0: all)")
    args = parser.parse_args()
    import os

    from morningstar_trader.sweep import dask_client

    cluster = dask_client(workers=args.workers)  # run_sweep's own local cluster, kept for both parts
    start, client = timed(cluster.__enter__)
    args.scheduler = client.scheduler.address
    print(
        f"local cluster of {args.workers} worker processes started in {start:.1f} s; load average "
        f"{os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores (the CPU is shared: wall times move with it)"
    )
    if not args.skip_sma:
        rows = sma_part(args)
        print(f"\n100 SMA pairs on {args.bars:,} 1-minute bars{'':<28}{'wall s':>10}{'CPU s':>10}")
        for name, s, c in rows:
            print(f"{name:<80}{s:>10.2f}{c:>10.2f}")
        print("(CPU s of the cluster row: the tasks' own CPU time summed over the workers)")
        print(
            f"serial / parallel: {rows[1][1] / rows[0][1]:.2f}x wall"
            + (
                f";  vectorbt / ours (cluster): {rows[2][1] / rows[0][1]:.2f}x wall, {rows[2][2] / rows[0][2]:.2f}x CPU"
                if len(rows) > 2
                else ""
            )
            + f"; load average now {os.getloadavg()[0]:.1f}"
        )
    if not args.skip_model:
        rows, (cluster_point, serial_point) = model_part(args)
        print(f"\n{'decision sweep':<80}{'seconds':>10}")
        for name, s in rows:
            print(f"{name:<80}{s:>10.2f}")
        print(
            f"per point: {cluster_point:.2f} s on the cluster (without the predictions), {serial_point:.2f} s one by "
            "one; "
            f"serial / parallel: {serial_point / cluster_point:.2f}x; CPU per point {rows[2][1] / args.configs:.1f} s; "
            f"load average now {os.getloadavg()[0]:.1f}"
        )
    cluster.__exit__(None, None, None)


if __name__ == "__main__":
    main()
