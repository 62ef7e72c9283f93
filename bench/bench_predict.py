"""Model inference: one window (p50/p99 latency) and batches (windows/s), MorningstarModel's compiled call vs Keras.

The network has the default architecture and feature set (window 48 x 13 technical + 4 context); its weights are
untrained, which changes nothing about speed. The peers are Keras' own `model.predict` and an eager `model(x)` call.

    .venv/bin/python bench/bench_predict.py [--single 300] [--batch 8760]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from morningstar_trader.candles import validated_bars
from morningstar_trader.config import ModelSettings, Settings
from morningstar_trader.features import DataPreparation
from morningstar_trader.model import EnhancedHybridModel, MorningstarModel
from morningstar_trader.sample_data import SAMPLE_PAIRS, synthetic_candles


def timings(fn, n: int) -> np.ndarray:
    fn()  # warm-up: graph tracing, allocations
    out = np.empty(n)
    for i in range(n):
        t = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t
    return out * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=300, help="single-window calls to time")
    parser.add_argument("--batch", type=int, default=8760, help="windows per batch (one year of 1h bars)")
    args = parser.parse_args()
    settings = Settings()
    raw, _ = synthetic_candles({"BTC/USDT": SAMPLE_PAIRS["BTC/USDT"]}, periods=args.batch + 800, seed=1)
    bars, _ = validated_bars(raw["BTC/USDT"], "synthetic", "BTC/USDT", "1h")
    prep = DataPreparation(settings.features, "1h")
    t = time.perf_counter()
    prep = prep.fit([prep.frame(bars)])
    feats = prep.transform(bars)
    prep_s = time.perf_counter() - t
    arch = EnhancedHybridModel(
        prep.settings.window, len(prep.technical_names), len(prep.context_names), ModelSettings()
    )
    network = arch.build()
    model = MorningstarModel(
        network, prep, {"heads": list(ModelSettings().heads), "target_scale": {"volatility": 1.0, "sl_tp": 1.0}}
    )
    one = {k: v[:1] for k, v in feats.inputs.items()}
    batch = {k: v[: args.batch] for k, v in feats.inputs.items()}

    single = {
        "MorningstarModel.predict (compiled)": timings(lambda: model.predict(one), args.single),
        "keras model(x), eager": timings(lambda: network(one, training=False), args.single),
        "keras model.predict": timings(lambda: network.predict(one, verbose=0), min(args.single, 100)),
    }
    ours = single["MorningstarModel.predict (compiled)"]
    print(f"single window ({args.single} calls, ms)")
    print(f"{'call':<38}{'p50':>8}{'p99':>8}{'p50 vs ours':>13}")
    for name, ms in single.items():
        p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
        print(f"{name:<38}{p50:>8.2f}{p99:>8.2f}{p50 / np.percentile(ours, 50):>12.1f}x")

    n = len(batch["technical"])
    rates = {
        "MorningstarModel.predict (compiled)": n / (min(timings(lambda: model.predict(batch), 3)) / 1000),
        "keras model.predict": n / (min(timings(lambda: network.predict(batch, verbose=0, batch_size=1024), 3)) / 1000),
    }
    print(f"\nbatch of {n} windows (best of 3)")
    print(f"{'call':<38}{'windows/s':>12}")
    for name, r in rates.items():
        print(f"{name:<38}{r:>12,.0f}")
    print(f"\nfeatures for {len(bars)} bars (indicators, scaler fit, windows): {prep_s:.2f} s")


if __name__ == "__main__":
    main()
