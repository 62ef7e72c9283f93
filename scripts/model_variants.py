"""Train model variants walk-forward on real candles and print the table of docs/EVALUATION.md (validation and test).

    python scripts/model_variants.py --work /tmp/variants --candles ../shared/data/binance_spot_1h [--only NAME ...]

Each variant is the default configuration with a few keys changed; each runs `morningstar train` in `--work` (its own
models/<variant>/). A variant is chosen on its validation columns only (mean over folds): the signal head's balanced
accuracy on the validation slices and the after-cost edge of the threshold picked there. The test columns are reported,
never used to choose."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from evaluation import import_candles, trained, write_config  # the same scripts folder

PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT"]
VARIANTS = {  # name -> changed keys (dotted) against config/config.yaml's defaults
    "default": {},
    "balanced": {"training.class_weight": "balanced"},
    "horizon 12": {"training.horizon": 12},
    "horizon 48": {"training.horizon": 48},
    "barrier 1.5 ATR": {"training.barrier_atr": 1.5},
    "barrier 3 ATR": {"training.barrier_atr": 3.0},
    "network x2": {"model.conv_filters": 64, "model.rnn_units": 64, "model.dense_units": 128},
    "balanced, horizon 48": {"training.class_weight": "balanced", "training.horizon": 48},
}


def _config(name: str, changes: dict, work: Path) -> Path:
    return write_config(work, {"model": {"name": name.replace(" ", "_").replace(",", "").replace(".", "_")}}, changes)


def _import(work: Path, candles: Path) -> None:
    if (work / "data" / "processed").is_dir():
        return
    config = _config("default", {}, work)
    for pair in PAIRS:
        import_candles(work, config, candles / f"{pair.replace('/', '')}_1h.csv", pair, "1h")


def _train(name: str, changes: dict, work: Path) -> dict:
    return trained(work, _config(name, changes, work), "--exchange", "binance", "--pairs", *PAIRS)


def row(name: str, changes: dict, meta: dict) -> dict:
    folds, o = meta["folds"], meta["evaluation"]["trading"]["overall"]
    mean = lambda xs: float(np.mean(xs))
    return {
        "variant": name,
        "changes": ", ".join(f"{k}={v}" for k, v in changes.items()) or "—",
        "val_bal_acc": mean([f["val_metrics"]["signal"]["balanced_accuracy"] for f in folds]),
        "val_edge": mean([f["decision"]["edge"] for f in folds]),
        "val_entries": int(sum(f["decision"]["entries"] for f in folds)),
        "test_bal_acc": mean([f["metrics"]["signal"]["balanced_accuracy"] for f in folds]),
        "test_qlike": mean([f["metrics"]["volatility"]["qlike"] for f in folds]),
        "test_return": o["model_return"],
        "test_sharpe": o["model_sharpe"],
        "test_max_dd": o["model_max_drawdown"],
        "trades": o["trades"],
        "p_value": o["p_value"],
        "bh_return": o["buy_hold_return"],
        "bh_max_dd": o["buy_hold_max_drawdown"],
        "seconds": meta["train_seconds"],
    }


def table(rows: list[dict]) -> str:
    head = (
        "| variant | changed | val. bal. acc. | val. edge (entries) | test bal. acc. | test QLIKE | test return | "
        "Sharpe | max DD | trades | p-value | train s |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['changes']} | {r['val_bal_acc']:.4f} | {r['val_edge']:+.5f} ({r['val_entries']}) | "
            f"{r['test_bal_acc']:.4f} | {r['test_qlike']:.3f} | {r['test_return']:+.2%} | {r['test_sharpe']:.2f} | "
            f"{r['test_max_dd']:.2%} | {r['trades']} | {r['p_value']:.3f} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--candles", type=Path, required=True)
    ap.add_argument("--only", nargs="*", default=None)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    _import(a.work, a.candles.resolve())
    rows = [row(n, c, _train(n, c, a.work)) for n, c in VARIANTS.items() if a.only is None or n in a.only]
    print(table(rows))
    (a.work / "variants.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
