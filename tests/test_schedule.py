"""`morningstar schedule` end to end on one-minute bars: APScheduler launches a papermill run `schedule.lead_s` before
the close, the run warms up, waits for the close, trades one paper cycle against the local exchange on the real clock,
and is recorded; the scheduler reports the bar."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from conftest import ROOT, TINY, Project, candles
from local_exchange import LocalExchange

from morningstar_trader.candles import validated_bars
from morningstar_trader.config import Settings
from morningstar_trader.runs import list_runs, load_run
from morningstar_trader.training import train_model


def minute_candles(n: int, minutes: int = 1) -> dict[str, pd.DataFrame]:
    """The synthetic hourly series moved onto a one-minute grid whose forming candle is the current minute (plus a
    margin)."""
    forming = pd.Timestamp.now(tz="UTC").floor(f"{minutes}min")
    frames = candles(n)
    index = pd.date_range(
        end=forming + pd.Timedelta(minutes=10 * minutes), periods=n, freq=f"{minutes}min", tz="UTC", name="timestamp"
    )
    return {p: df.set_axis(index) for p, df in frames.items()}


def scheduled(root, check: int = 0, minutes: int = 1, **config) -> str:
    """`morningstar schedule --mode paper --max-runs 1` on bars of `minutes` against the local exchange, with a tiny
    model trained first and `config` added; what it printed."""
    data, timeframe = minute_candles(2_000, minutes), f"{minutes}m"
    train = {p: validated_bars(df.iloc[:1_700].reset_index(), "synthetic", p, timeframe)[0] for p, df in data.items()}
    train_model(Settings(**TINY, timeframe=timeframe), train, root / "models" / "default" / "v1", verbose=0)
    with LocalExchange(data, timeframe) as server:
        config = {
            **TINY,
            "mode": "paper",
            "pairs": ["BTC/USDT", "ETH/USDT"],
            "timeframe": timeframe,
            "exchange": {"api_url": server.base_url, "timeout_ms": 3000},
            "schedule": {"lead_s": 35, "settle_s": 0.5, "max_late_s": 30},
            **config,
        }
        (root / "config.yaml").write_text(yaml.safe_dump(config))
        return (
            Project(root, root / "config.yaml")
            .run(
                "schedule",
                "--mode",
                "paper",
                "--max-runs",
                "1",
                "--notebook",
                str(ROOT / "nbs" / "trading_cycle.ipynb"),
                timeout=300,
                check=check,
            )
            .stdout
        )


def test_schedule_runs_one_warm_cycle_per_closed_bar(tmp_path):
    out = scheduled(tmp_path)
    (row,) = list_runs(tmp_path / "runs").to_dict("records")
    assert row["status"] == "ok" and row["mode"] == "paper"
    scraps = load_run(row["run_id"], tmp_path / "runs")
    close = pd.Timestamp(scraps["parameters"]["bar_close"])
    assert close == close.floor("min") and f"bar {close}: ok" in out
    assert 0.5 <= scraps["stats"]["ready_after_close_s"] < 30  # launched early, waited for the close
    assert pd.Timestamp(scraps["stats"]["bar"]) == close - pd.Timedelta(
        minutes=1
    )  # and traded the bar that just closed
    assert "skipped" not in set(scraps["decisions"]["action"])


@pytest.mark.slow
def test_schedule_runs_each_strategy_in_parallel_and_one_failure_stays_its_own(tmp_path):
    # two-minute bars with a long lead: two runs start at once, each a kernel and TensorFlow, on 2 busy cores
    out = scheduled(
        tmp_path,
        check=1,
        minutes=2,
        schedule={"lead_s": 90, "settle_s": 0.5, "max_late_s": 60},
        strategies=[
            {"name": "good", "capital": 0.5},
            {"name": "broken", "pairs": ["ETH/USDT"], "model": "missing", "capital": 0.5},
        ],
    )
    runs = {r["run_id"].split("-")[1]: r for r in list_runs(tmp_path / "runs").to_dict("records")}
    assert (runs["good"]["status"], runs["broken"]["status"]) == ("ok", "failed")
    assert "missing" in runs["broken"]["error"]
    assert abs(pd.Timestamp(runs["good"]["started_at"]) - pd.Timestamp(runs["broken"]["started_at"])) < pd.Timedelta(
        seconds=20
    )
    assert (
        "strategy broken: exit status 1" in out and "strategy good: exit status" in out
    )  # good's: 1 if a loaded run missed a bar
    assert (tmp_path / "state" / "good" / "paper.sqlite").is_file()
