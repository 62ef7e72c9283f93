"""Issue 14: the live gate (a model without an edge after costs is refused live, accepted with --allow-unproven-model,
paper and backtest never gated), `latest` by creation time, calibration and the chosen threshold in the artifact."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from artifact_kit import known_evaluation, read, sample_bars, tiny_artifact, write
from conftest import ROOT, TINY, Project

from morningstar_trader.artifact import ModelError, resolve_model_dir
from morningstar_trader.cli import _live_gate, main
from morningstar_trader.config import Settings
from morningstar_trader.gate import UnprovenModelError
from morningstar_trader.model import MorningstarModel

NOTEBOOK = str(ROOT / "nbs" / "trading_cycle.ipynb")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """models/default/{none,weak,edge,behind,old}: no trading evaluation, a positive excess with p = 0.62, a clear edge,
    beating buy & hold but not vol-targeted buy & hold, an edge over buy & hold in an evaluation written before
    vol-targeted buy & hold existed."""
    root = tmp_path_factory.mktemp("gate") / "models" / "default"
    for name, ev in (
        ("none", None),
        ("weak", known_evaluation(0.3, 0.62)),
        ("edge", known_evaluation(0.5, 0.02)),
        ("behind", known_evaluation(-0.2, 0.02, vol_target_sharpe=0.9)),
        ("old", known_evaluation(0.5, 0.02, vol_target_sharpe=None)),
    ):
        path = tiny_artifact(root / name)
        if ev:
            write(path, "metadata.json", read(path, "metadata.json") | {"evaluation": ev})
    return root


def project(tmp: Path, models: Path, version: str, extra: dict | None = None) -> Project:
    """A project whose config points at `models` and uses model version `version`."""
    config = {
        **TINY,
        "model": {**TINY["model"], "version": version},
        "paths": {"models_dir": str(models.parent)},
        **(extra or {}),
    }
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    return Project(tmp, tmp / "config.yaml")


@pytest.mark.slow  # ~10 s unloaded, most of it TensorFlow's import in a fresh process; 45 s on 2 busy cores
def test_live_run_refuses_a_model_without_an_edge_in_one_error_line_with_its_numbers(models, tmp_path):
    p = project(tmp_path, models, "weak")
    proc = p.run("run", "--mode", "live", "--i-understand-this-trades-real-money", "--notebook", NOTEBOOK, check=2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("morningstar: error: refusing to trade model"), proc.stderr
    for numbers in (
        "fold-mean Sharpe 0.70: beats buy & hold 0.40, beats vol-targeted buy & hold 0.30",
        "(excess over buy & hold, the better +0.30, needs > 0)",
        "p-value 0.620 against random entries (needs < 0.1)",
        "41 trades over 3 test window(s)",
        "--allow-unproven-model",
    ):
        assert numbers in lines[0], (numbers, lines[0])
    assert not list(tmp_path.rglob("*.ipynb"))  # no cycle notebook was started


@pytest.mark.parametrize(
    "version, says, extra",
    [
        ("weak", "p-value 0.620", None),
        ("none", "no trading evaluation", None),
        (
            "edge",
            "rule buy_hold live: no edge after costs: a rule has no trading evaluation",
            {"rule": {"name": "buy_hold"}},
        ),
    ],
)
def test_schedule_live_refuses_an_unproven_model_before_any_cycle(
    models, tmp_path, monkeypatch, capsys, version, says, extra
):
    """An unevaluated rule too, even beside a model that would pass."""
    p = project(tmp_path, models, version, extra)
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "schedule",
                "--mode",
                "live",
                "--i-understand-this-trades-real-money",
                "--max-runs",
                "1",
                "--config",
                str(p.config),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("morningstar: error: refusing to trade model") and says in err and err.count("\n") == 1, err
    assert not list(tmp_path.rglob("*.ipynb")) and not (tmp_path / "runs" / "schedule.lock").exists()


def _args(allow: bool) -> argparse.Namespace:
    return argparse.Namespace(allow_unproven_model=allow)


@pytest.mark.parametrize("version, passes", [("edge", True), ("weak", False)])
def test_the_live_gate_reads_the_card_without_loading_tensorflow(models, tmp_path, version, passes):
    """`run --mode live` decides the gate from metadata.json alone (hashes verified), before any notebook: in a fresh
    process, TensorFlow is never imported, whether the gate passes or refuses."""
    p = project(tmp_path, models, version)
    code = (
        "import argparse, sys\n"
        "from morningstar_trader.cli import _live_gate\n"
        "from morningstar_trader.config import load_config\n"
        "from morningstar_trader.gate import UnprovenModelError\n"
        f"cfg = load_config({str(p.config)!r})\n"
        "try:\n"
        "    _live_gate(argparse.Namespace(allow_unproven_model=False), cfg, 'live'); print('PASSED')\n"
        "except UnprovenModelError: print('REFUSED')\n"
        "print('TF-LOADED' if 'tensorflow' in sys.modules or 'keras' in sys.modules else 'TF-FREE')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[-2:] == ["PASSED" if passes else "REFUSED", "TF-FREE"], out.stdout + out.stderr


def test_the_gate_passes_an_edge_obeys_the_config_thresholds_and_the_flag_lets_an_unproven_model_through(
    models, capsys
):
    cfg = Settings(**{**TINY, "paths": {"models_dir": str(models.parent)}})
    use = lambda version, **gate: Settings(
        **{**cfg.model_dump(), "model": {**cfg.model.model_dump(), "version": version}, "gate": gate}
    )
    _live_gate(_args(False), use("edge"), "live")
    assert "passes the live gate: fold-mean Sharpe 0.90" in capsys.readouterr().out
    with pytest.raises(UnprovenModelError, match="p-value 0.620"):
        _live_gate(_args(False), use("weak"), "live")
    _live_gate(_args(False), use("weak", max_p_value=0.7), "live")  # thresholds come from the config
    with pytest.raises(UnprovenModelError, match=r"loses to buy & hold 0.40.* the better \+0.30, needs > 0.5"):
        _live_gate(_args(False), use("weak", max_p_value=0.7, min_sharpe_excess=0.5), "live")
    # ahead of buy & hold, behind vol-targeted buy & hold: refused, naming the baseline it lost to, with the numbers
    with pytest.raises(
        UnprovenModelError,
        match=r"Sharpe 0.70: beats buy & hold 0.40, loses to vol-targeted buy & hold 0.90 \(excess over vol-targeted "
        r"buy & hold, the better -0.20, needs > 0\), p-value 0.020",
    ):
        _live_gate(_args(False), use("behind"), "live")
    # metadata written before vol-targeted buy & hold: still read, compared with buy & hold alone, and it says so
    _live_gate(_args(False), use("old"), "live")
    out = capsys.readouterr().out
    assert "passes the live gate: fold-mean Sharpe 0.90: beats buy & hold 0.40 (excess over buy & hold +0.50" in out
    assert "an evaluation from before vol-targeted buy & hold: against buy & hold only" in out
    capsys.readouterr()
    _live_gate(_args(True), use("none"), "live")  # the flag: a warning, no refusal
    assert "warning: trading the unproven model" in capsys.readouterr().err
    for mode in ("paper", "backtest"):
        _live_gate(_args(False), use("none"), mode)  # never gated


def _dated(root: Path, name: str, created_at) -> Path:
    path = tiny_artifact(root / name)
    write(path, "metadata.json", read(path, "metadata.json") | {"created_at": created_at})
    return path


def test_latest_is_the_model_created_last_whatever_its_folder_name(tmp_path):
    root = tmp_path / "models" / "default"
    _dated(root, "zzz-old", "2024-01-01T00:00:00+00:00")
    newer = _dated(root, "aaa-new", "2024-06-01T10:00:00+02:00")
    assert sorted(p.name for p in root.iterdir())[-1] == "zzz-old"  # the folder names sort the other way
    assert resolve_model_dir(tmp_path / "models", "default") == newer
    assert (
        resolve_model_dir(tmp_path / "models", "default", "zzz-old") == root / "zzz-old"
    )  # a named version is as named
    _dated(root, "mmm-naive", "2025-01-01T00:00:00")  # no time zone: cannot be placed
    with pytest.raises(ModelError, match="mmm-naive.*no created_at with a time zone"):
        resolve_model_dir(tmp_path / "models", "default")


def test_calibration_and_the_chosen_threshold_travel_with_the_artifact(tmp_path):
    path = tiny_artifact(tmp_path / "m" / "v1")
    plain = MorningstarModel.load(path)
    write(
        path,
        "metadata.json",
        read(path, "metadata.json")
        | {"calibration": {"temperature": 3.0}, "decision": {"min_confidence": 0.6, "entries": 12}},
    )
    hot = MorningstarModel.load(path)
    feats = plain.prep.transform(sample_bars())
    a, b = plain.predict(feats), hot.predict(feats)
    np.testing.assert_array_equal(a["action"], b["action"])  # temperature never changes the class
    assert (b["confidence"] <= a["confidence"] + 1e-6).all() and b["confidence"].mean() < a["confidence"].mean()
    from morningstar_trader.backtest import ModelStrategy

    assert ModelStrategy(hot).min_confidence == 0.6 and ModelStrategy(hot, 0.5).min_confidence == 0.5
    assert ModelStrategy(plain).min_confidence == 0.45
    write(path, "metadata.json", read(path, "metadata.json") | {"calibration": {"temperature": -1.0}})
    with pytest.raises(ModelError, match="temperature"):
        MorningstarModel.load(path)


class _Markets:
    """Stands in for the API manager up to the gate: build_context asks it for markets only before loading the model."""

    def load_markets(self) -> dict:
        return {p: {"quote": "USDT"} for p in ("BTC/USDT", "ETH/USDT")}


def test_a_live_cycle_started_without_the_cli_is_gated_too(models, tmp_path):
    "papermill on the cycle notebook directly: build_context refuses the unproven model unless allow_unproven_model."
    from pydantic import SecretStr

    from morningstar_trader.config import Secrets
    from morningstar_trader.cycle import build_context

    s = Settings(
        **{
            **TINY,
            "mode": "live",
            "model": {**TINY["model"], "version": "weak"},
            "paths": {"models_dir": str(models.parent), "state_dir": str(tmp_path / "state")},
        }
    )
    keys = Secrets(exchange_api_key=SecretStr("k"), exchange_secret=SecretStr("s"))
    with pytest.raises(UnprovenModelError, match="p-value 0.620"):
        build_context(s, keys, run_id="t", api=_Markets(), confirm_live=True)
    assert not (tmp_path / "state").exists()  # refused before any book or venue
