"""A tiny model directory built without training (seconds), and the edits a careless user or a forger makes to one."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from conftest import TINY, candles

from morningstar_trader.artifact import _digest
from morningstar_trader.candles import validated_bars
from morningstar_trader.config import Settings
from morningstar_trader.features import DataPreparation
from morningstar_trader.model import EnhancedHybridModel, save_model
from morningstar_trader.types import Bars

SETTINGS = Settings(**TINY)
SCALES = {"volatility": 0.01, "sl_tp": 0.02}


def sample_bars(n: int = 300, seed: int = 5) -> Bars:
    """`n` hourly synthetic ETH/USDT candles."""
    frame = candles(n, pairs=("ETH/USDT",), seed=seed)["ETH/USDT"]
    return validated_bars(frame.reset_index(names="timestamp"), "synthetic", "ETH/USDT", "1h")[0]


def tiny_artifact(path: Path, network=None) -> Path:
    """A model directory as `morningstar train` writes one (descriptive fields, a model card), with an untrained
    network."""
    prep = DataPreparation(SETTINGS.features, SETTINGS.timeframe)
    prep = prep.fit([prep.frame(sample_bars())])
    if network is None:
        network = EnhancedHybridModel(
            prep.settings.window, len(prep.technical_names), len(prep.context_names), SETTINGS.model
        ).build(seed=1)
    meta = {
        "heads": list(SETTINGS.model.heads),
        "target_scale": dict(SCALES),
        "seed": 1,
        "created_at": "2024-06-01T00:00:00+00:00",
        "data": {"pairs": ["ETH/USDT"], "exchanges": ["synthetic"], "rows": {"ETH/USDT": 300}},
        "folds": [{"samples": {"train": 200}, "metrics": {"signal": {"balanced_accuracy": float("nan")}}}],
    }
    return save_model(path, network, prep, meta, {"MODEL_CARD.md": "# Model card: tiny\n\n- untrained, for tests ±\n"})


def known_evaluation(sharpe_excess: float, p: float, vol_target_sharpe: float | None = 0.3) -> dict:
    """A trading evaluation as training writes it (overall part), with the given edge over the better of buy & hold
    (Sharpe 0.4) and vol-targeted buy & hold (`vol_target_sharpe`; None: an evaluation written before it existed, buy &
    hold only): gate tests never rest on what a network happened to learn."""
    best = max(0.4, vol_target_sharpe if vol_target_sharpe is not None else 0.4)
    overall = {
        "folds": 3,
        "model_return": 0.012,
        "model_sharpe": best + sharpe_excess,
        "model_max_drawdown": 0.05,
        "turnover": 3.1,
        "fees": 12.5,
        "trades": 41,
        "buy_hold_return": 0.08,
        "buy_hold_sharpe": 0.4,
        "buy_hold_max_drawdown": 0.2,
        "sharpe_excess": sharpe_excess,
        "random_mean_gain": 0.0,
        "p_value": p,
    }
    if vol_target_sharpe is not None:
        overall |= {
            "buy_hold_turnover": 1.0,
            "vol_target_return": 0.05,
            "vol_target_sharpe": vol_target_sharpe,
            "vol_target_max_drawdown": 0.1,
            "vol_target_turnover": 1.4,
            "tsmom_return": 0.02,
            "tsmom_sharpe": 0.2,
            "tsmom_max_drawdown": 0.08,
            "tsmom_turnover": 4.0,
            "tsmom_lookbacks": ["1 month", "1 week", "1 month"],
            "best_baseline": "vol_target" if vol_target_sharpe > 0.4 else "buy_hold",
            "sharpe_excess_vs_buy_hold": best + sharpe_excess - 0.4,
        }
    return {"trading": {"overall": overall, "folds": [], "permutations": 200, "cash": 10_000.0}}


def read(path: Path, name: str):
    return json.loads((path / name).read_text())


def reseal(path: Path) -> None:
    """Update metadata.json's hashes of every listed file and of itself, as a forger (or a careful editor) would."""
    meta = read(path, "metadata.json")
    meta["files"] = {
        n: hashlib.sha256((path / n).read_bytes()).hexdigest() if "/" not in n and (path / n).is_file() else h
        for n, h in meta["files"].items()
    }
    meta["metadata_sha256"] = _digest(meta)
    (path / "metadata.json").write_text(json.dumps(meta))


def write(path: Path, name: str, data, sealed: bool = True) -> None:
    """Replace a JSON file's content; `sealed` re-hashes it into metadata.json."""
    (path / name).write_text(json.dumps(data))
    if sealed:
        reseal(path)


def as_format_1(path: Path) -> None:
    """Rewrite the directory as the format saved before every file was hashed: only model.keras has a hash."""
    meta = read(path, "metadata.json")
    meta = {k: v for k, v in meta.items() if k not in ("files", "metadata_sha256")} | {
        "format": 1,
        "model_sha256": meta["files"]["model.keras"],
    }
    (path / "metadata.json").write_text(json.dumps(meta, indent=2))
    (path / "MODEL_CARD.md").unlink()
