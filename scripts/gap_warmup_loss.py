"""How many bars of the real 1h pairs cannot be decided on because of warm-up: with gaps split (features.max_gap_bars 0,
before issue 26) and with short gaps carried over (the config's max_gap_bars). A bar is lost when no model sample ends
on it: the first warm-up + window bars of the set, and of every stretch after a gap that is split.

    .venv/bin/python scripts/gap_warmup_loss.py [--data ../shared/data/binance_spot_1h] [--config config/config.yaml]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from morningstar_trader.candles import find_gaps, validated_bars
from morningstar_trader.config import load_config
from morningstar_trader.features import DataPreparation
from morningstar_trader.types import parse_timeframe


def decided(prep: DataPreparation, bars) -> int:
    "Bars on which a model sample ends (the scaler fitted on the bars themselves: only the count matters here)."
    frame = prep.frame(bars)
    return len(prep.fit([frame]).windows(bars.pair, frame))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/binance_spot_1h")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--max-gap", type=int, help="carry gaps up to this long (default: the config's)")
    args = ap.parse_args()
    cfg = load_config(args.config)
    if args.max_gap is not None:
        cfg = cfg.model_copy(update={"features": cfg.features.model_copy(update={"max_gap_bars": args.max_gap})})
    after = DataPreparation(cfg.features, "1h")
    before = DataPreparation(cfg.features.model_copy(update={"max_gap_bars": 0}), "1h")
    rows = []
    for path in sorted(Path(args.data).glob("*_1h.csv")):
        raw = pd.read_csv(path).rename(columns={"date": "timestamp"})
        pair = path.name.split("USDT")[0] + "/USDT"
        bars, _ = validated_bars(raw[["timestamp", "open", "high", "low", "close", "volume"]], "binance", pair, "1h")
        gaps = find_gaps(bars.frame.index, parse_timeframe("1h"))
        n, b, a = len(bars), decided(before, bars), decided(after, bars)
        rows.append(
            {
                "pair": pair,
                "bars": n,
                "gaps": len(gaps),
                "missing": int(gaps["missing"].sum()),
                "longest": int(gaps["missing"].max()) if len(gaps) else 0,
                "lost_before": n - b,
                "lost_after": n - a,
            }
        )
    table = pd.DataFrame(rows).set_index("pair")
    table.loc["total"] = table.sum(numeric_only=True)
    print(f"warm-up + window: {after.min_bars} bars; features.max_gap_bars: {cfg.features.max_gap_bars}")
    print(table.to_string())


if __name__ == "__main__":
    main()
