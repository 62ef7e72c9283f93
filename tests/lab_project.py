"""A project as a researcher leaves it after a few runs: sample candles, a tiny model trained through the CLI, a model
backtest and a rule backtest run as papermill notebooks, and a paper account that lost 25 % and was halted."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml
from conftest import ROOT, TINY, Project

NOTEBOOK = str(ROOT / "nbs" / "trading_cycle.ipynb")
# Start-up noise of TensorFlow, absl, CUDA and the Jupyter kernel: none of it may reach a console, a log or a run
# notebook
NOISE = re.compile(
    r"absl::InitializeLog|cuda|cuInit|NodeDef mentions|cpu_feature_guard|rebuild TensorFlow|oneDNN|"
    r"^[IWEF]\d{4} \d\d:\d\d:\d\d|running over TCP without encryption|tensorflow/core|XLA|"
    r"computation placer|Unable to register",
    re.I | re.M,
)


@dataclass
class LabProject(Project):
    outputs: dict[str, str] = field(default_factory=dict)  # what each command printed (stdout + stderr)
    run_ids: list[str] = field(default_factory=list)  # model run first, then the rule run


def _run_id(stdout: str) -> str:
    return stdout.split()[1].rstrip(":")


def halted_paper_store(state_dir: Path) -> Path:
    """A paper account with a position (stop and target), an open limit order, three cycles' marks and snapshots,
    halted by its drawdown."""
    from morningstar_trader.monitoring import Alert, MonitoringLog, Snapshot
    from morningstar_trader.portfolio import PortfolioStore
    from morningstar_trader.risk import RiskState
    from morningstar_trader.types import Fill, Order

    path = state_dir / "paper.sqlite"
    store = PortfolioStore(path, initial_cash=10_000.0)
    store.add_order(Order("c1", "BTC/USDT", "buy", 0.05, intent="open_long"))
    store.set_status("c1", "submitted")
    store.record_fill(
        Fill("t1", "c1", "BTC/USDT", "buy", 0.05, 60_000.0, 3.0, pd.Timestamp("2024-07-01T01:00", tz="UTC")),
        stop_loss=57_000.0,
        take_profit=66_000.0,
    )
    store.add_order(Order("c2", "ETH/USDT", "buy", 1.0, type="limit", price=3_000.0, intent="open_long"))
    log = MonitoringLog(path)
    for i, (equity, trading) in enumerate([(10_000.0, "active"), (8_800.0, "reducing"), (7_500.0, "halted")]):
        t = pd.Timestamp("2024-07-01T01:00", tz="UTC") + pd.Timedelta(hours=i)
        store.mark(t, {"BTC/USDT": 60_000.0 - (10_000 - equity) / 0.05})
        alerts = (
            (Alert("critical", "halted", "trading halted: drawdown 25.00% over max_drawdown 20.00%"),)
            if trading == "halted"
            else ()
        )
        log.add(
            Snapshot(
                t,
                equity,
                7_000.0,
                equity - 10_000,
                1 - equity / 10_000,
                0.3,
                1,
                trading,
                alerts,
                {"exchanges": 3, "failures": 0, "latency_p50_s": 0.8, "cost_usd": 0.0123},
            )
        )
    store.save_runtime(
        "risk_state",
        {
            **RiskState.start(10_000.0, "2024-07-01").to_json(),
            "trading": "halted",
            "why": "drawdown 25.00% over max_drawdown 20.00%",
        },
    )
    return path


def _untrained_model(root: Path) -> subprocess.Popen:
    """Write models/default/<version> as `morningstar train` lays it out, with an untrained network (seconds, against a
    minute of training): the dashboard shows a model run's heads, not its skill. Training itself is tested in
    test_cli_train."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; from artifact_kit import "
        "tiny_artifact; "
        "tiny_artifact(Path(sys.argv[2]))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(ROOT / "tests"), str(root / "models" / "default" / "20240601T000000Z")],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def lab_config(root: Path) -> Path:
    config = {
        **TINY,
        "pairs": ["BTC/USDT", "ETH/USDT"],
        "timeframe": "1h",
        "exchange": {"id": "binance"},
        "llm": {"mode": "simulated"},
        "monitoring": {"stale_after_bars": 2},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root / "config.yaml"


def make_lab_project(root: Path) -> LabProject:
    """Built in about half the wall time of doing it step by step: the model is written while the rule run runs."""
    p = LabProject(root, root / "config.yaml" if (root / "config.yaml").is_file() else lab_config(root))

    def run(name: str, *args: str) -> str:
        proc = p.run(*args, timeout=300)
        p.outputs[name] = proc.stdout + proc.stderr
        return proc.stdout

    run("sample", "data", "sample", "--days", "60", "--pairs", "BTC/USDT", "ETH/USDT")
    backtest = ("run", "--mode", "backtest", "--exchange", "synthetic", "--start", "2023-02-01", "--notebook", NOTEBOOK)
    with ThreadPoolExecutor(2) as pool:
        rule = pool.submit(run, "rule run", *backtest, "--strategy", "sma_cross", "--size", "0.1")
        writer = _untrained_model(root)
        out, _ = writer.communicate(timeout=300)
        assert writer.returncode == 0, out
        model = run("model run", *backtest, "--html")
        p.run_ids = [_run_id(model), _run_id(rule.result())]
    halted_paper_store(root / "state")
    return p
