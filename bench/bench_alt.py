"""Alternative data: what the as-of features and the market digest cost.

On the synthetic sample set (candles with Fear & Greed, funding and headlines derived from them, as `morningstar data
sample` writes): the feature frame of one pair with and without the two alternative sources, and the digest's inputs at
every close of a year, read the way a cycle reads them (`digest_inputs`: load the store, then slice) and the way a
backtest does (`DigestData` loaded once, sliced per close): one slicing code, so no equality to check.

    .venv/bin/python bench/bench_alt.py [--bars 8760] [--closes 300]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from morningstar_trader.alt_data import load_alt_tables
from morningstar_trader.alt_providers import AltStore
from morningstar_trader.config import AltDataSource, FeatureSettings, Settings
from morningstar_trader.digest import DigestData, digest_inputs
from morningstar_trader.features import DataPreparation
from morningstar_trader.sample_data import write_sample_data
from morningstar_trader.store import CandleStore


def best(f, n: int = 3) -> float:
    "The fastest of `n` runs of `f`, seconds."
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=8760)
    parser.add_argument(
        "--closes", type=int, default=300, help="closes timed with digest_inputs (extrapolated to --bars)"
    )
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="bench-alt-"))
    pairs = ("BTC/USDT", "ETH/USDT")
    write_sample_data(CandleStore(data), pairs=pairs, periods=args.bars, alt_store=AltStore(data))
    bars = CandleStore(data).load("synthetic", "BTC/USDT", "1h")
    alt = (
        AltDataSource(name="fg", source="fear_greed", columns=("value",), max_age="2d"),
        AltDataSource(name="fund", source="funding", columns=("funding_rate",), max_age="9h", stale_policy="carry"),
    )
    plain = DataPreparation(FeatureSettings(), "1h")
    with_alt = DataPreparation(FeatureSettings(alt_data=alt), "1h", alt_tables=load_alt_tables(alt, data))
    t_plain, t_alt = best(lambda: plain.frame(bars)), best(lambda: with_alt.frame(bars))

    settings, assets = Settings(paths={"data_dir": str(data)}), ("BTC", "ETH")
    closes = bars.frame.index[200:] + (bars.frame.index[1] - bars.frame.index[0])
    sample = closes[:: max(1, len(closes) // args.closes)][: args.closes]
    loaded = DigestData.load(data)
    t_load = best(lambda: [digest_inputs(data, at, assets, settings) for at in sample], 1) / len(sample)
    t_once = best(lambda: DigestData.load(data), 1)
    t_slice = best(lambda: [loaded.inputs(at, assets, settings) for at in closes], 1) / len(closes)

    print(f"synthetic sample, {len(bars):,} 1h bars per pair, {len(pairs)} pairs")
    print(f"{'features of one pair':<52}{'seconds':>10}")
    print(f"{'  technical + time context':<52}{t_plain:>10.3f}")
    print(f"{'  + Fear & Greed and funding, as of availability':<52}{t_alt:>10.3f}   ({t_alt / t_plain:.2f}x)")
    print(f"\n{'digest inputs at every close of the range':<52}{'seconds':>10}")
    print(
        f"{'  load the store and slice, per close (a cycle)':<52}{t_load * len(closes):>10.2f}   "
        f"({t_load * 1e3:.1f} ms x {len(closes):,}, extrapolated)"
    )
    print(
        f"{'  load once + slice per close (a backtest)':<52}{t_once + t_slice * len(closes):>10.2f}   "
        f"({t_once * 1e3:.0f} ms + {t_slice * 1e6:.0f} us x {len(closes):,})"
    )
    print(f"ratio: {t_load * len(closes) / (t_once + t_slice * len(closes)):.0f}x")


if __name__ == "__main__":
    main()
