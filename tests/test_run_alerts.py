"""A crashed run and a missed bar reach someone (issue 26): `morningstar run` whose notebook raises, and one whose
kernel dies, are `failed` in the run index with the error, leave a record in the account's monitoring log and push a
critical `run_failed` alert to a webhook on 127.0.0.1; a missed scheduled bar is indexed, recorded and pushed once,
however often it is reported. The notebooks are tiny (a kernel start each), the cycle itself is not run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import nbformat
import pandas as pd
import pytest
from conftest import Project, write_config
from local_hooks import LocalHooks
from nbformat.v4 import new_code_cell, new_notebook

from morningstar_trader.cli import _bar_outcome, _missed_while_down, _report_abandoned
from morningstar_trader.config import load_config
from morningstar_trader.monitoring import MonitoringLog, Snapshot
from morningstar_trader.runs import list_runs, record_missed
from morningstar_trader.schedule import BarLog


def tiny_notebook(path, body: str):
    "A cycle notebook stand-in: the parameters `run` passes, then `body`."
    params = new_code_cell('mode = "backtest"\nconfig_path = ""\nrun_id = ""')
    params.metadata["tags"] = ["parameters"]
    nbformat.write(
        new_notebook(
            cells=[params, new_code_cell(body)],
            metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        ),
        path,
    )
    return path


@pytest.fixture
def hooked(tmp_path):
    "A paper project whose account has one snapshot, its alerts going to a local webhook."
    with LocalHooks() as hooks:
        hook = f"    - kind: webhook\n      url: {hooks.base_url}/hook\n"
        extra = f"mode: paper\nmonitoring:\n  notify_flush_s: 30\n  notify:\n{hook}"
        config = write_config(tmp_path, "http://127.0.0.1:9", extra)
        t = pd.Timestamp("2024-05-01 10:00", tz="UTC")
        MonitoringLog(tmp_path / "state" / "paper.sqlite").add(
            Snapshot(t, 10_000.0, 9_000.0, 0.0, 0.0, 0.1, 1, "active")
        )
        yield Project(tmp_path, config), hooks


def test_a_crashed_run_is_indexed_recorded_and_pushed(hooked):
    project, hooks = hooked
    root = project.root
    failures = {
        "raises": "raise RuntimeError('the cycle broke')",
        "dies": "import os\nos._exit(3)",  # the kernel dies mid-cell
    }
    for name, body in failures.items():
        nb = tiny_notebook(root / f"{name}.ipynb", body)
        proc = project.run("run", "--mode", "paper", "--notebook", str(nb), check=None)
        assert proc.returncode != 0 and "failed" in proc.stderr
    runs = list_runs(root / "runs").sort_values("started_at")
    assert list(runs["status"]) == ["failed", "failed"]
    raised, died = runs["error"]
    assert "RuntimeError: the cycle broke" in raised and "DeadKernelError" in died
    mon = MonitoringLog(root / "state" / "paper.sqlite").frame()
    assert len(mon) == 3 and list(mon["equity"]) == [10_000.0] * 3  # the account as its last snapshot left it
    recorded = [a for row in mon["alerts"].iloc[1:] for a in row]
    assert [(a["level"], a["kind"]) for a in recorded] == [("critical", "run_failed")] * 2
    pushed = sorted((r["json"] for r in hooks.received), key=lambda j: "DeadKernel" in j["message"])
    assert [(j["level"], j["kind"]) for j in pushed] == [("critical", "run_failed")] * 2
    assert [j["run"] for j in pushed] == list(runs["run_id"])
    assert "the cycle broke" in pushed[0]["message"] and "DeadKernelError" in pushed[1]["message"]
    shown = project.run("runs", "show", runs["run_id"].iloc[0]).stdout  # the failed run's record, readable
    assert (
        shown.startswith(f"run {runs['run_id'].iloc[0]}: failed (paper)") and "RuntimeError: the cycle broke" in shown
    )


def test_a_missed_bar_is_indexed_recorded_and_pushed_once(hooked, monkeypatch):
    project, hooks = hooked
    monkeypatch.chdir(project.root)
    cfg = load_config(project.config)
    params = {"mode": "paper", "config_path": str(project.config)}
    bars = BarLog(pd.Timedelta(hours=1), lambda o: _bar_outcome(cfg, "paper", params, o))
    close = pd.Timestamp("2024-05-01 11:00", tz="UTC")
    bars.record(close, "missed", "the previous run was still going")
    bars.record(close, "missed", "another run holds the lock")  # the same bar reported again
    bars.record(close + pd.Timedelta(hours=2), "failed", "RunError: run x failed: boom")  # 12:00 was skipped
    runs = list_runs(project.root / "runs").sort_values("started_at")
    assert list(runs["status"]) == ["missed", "missed"]
    assert [json.loads(p)["bar_close"] for p in runs["params"]] == [
        "2024-05-01T11:00:00+00:00",
        "2024-05-01T12:00:00+00:00",
    ]
    assert list(runs["error"]) == ["the previous run was still going", "no run: the scheduler skipped it"]
    kinds = sorted((j["json"]["kind"], j["json"]["level"]) for j in hooks.received)
    assert kinds == [("missed_bar", "warning"), ("missed_bar", "warning"), ("run_failed", "critical")]
    mon = MonitoringLog(project.root / "state" / "paper.sqlite").frame()
    assert sorted(a["kind"] for row in mon["alerts"] for a in row) == ["missed_bar", "missed_bar", "run_failed"]
    shown = project.run("runs", "show", runs["run_id"].iloc[1]).stdout
    assert "missed (paper)" in shown and "error: no run: the scheduler skipped it" in shown and "(no run)" in shown


def test_bars_missed_while_no_scheduler_ran_are_indexed_and_said_once(hooked, monkeypatch):
    project, hooks = hooked
    monkeypatch.chdir(project.root)
    cfg = load_config(project.config)
    params = {"mode": "paper", "config_path": str(project.config)}
    last = pd.Timestamp("2024-05-01 10:00", tz="UTC")
    record_missed(params, last, "the newest bar the index knows", runs_dir=cfg.paths.runs_dir)
    restart = last + pd.Timedelta(hours=3, minutes=30)  # the scheduler starts again; its first close is 14:00
    gap = _missed_while_down(cfg, "paper", params, now=restart)
    assert [c.hour for c in gap] == [11, 12, 13]
    runs = list_runs(project.root / "runs")
    assert sorted(json.loads(p)["bar_close"][11:16] for p in runs["params"]) == ["10:00", "11:00", "12:00", "13:00"]
    assert set(runs["status"]) == {"missed"}
    (pushed,) = [r["json"] for r in hooks.received]  # one alert for the three bars
    assert (pushed["level"], pushed["kind"]) == ("warning", "missed_bar") and pushed["message"].startswith("3 bar(s)")
    assert _missed_while_down(cfg, "paper", params, now=restart) == []  # found once: they are in the index now
    assert _missed_while_down(cfg, "paper", {**params, "strategy": "other"}, now=restart) == []  # its own runs only
    assert len(hooks.received) == 1


def test_a_run_whose_process_was_killed_is_failed_recorded_and_pushed_at_the_next_start(hooked, monkeypatch):
    project, hooks = hooked
    monkeypatch.chdir(project.root)
    cfg = load_config(project.config)
    started = (  # a `morningstar run` process that indexed its run, then was killed before it could record its end
        "import os, signal; from datetime import datetime, timezone; from pathlib import Path; "
        "from morningstar_trader.runs import _index_started; "
        f"_index_started(Path({str(cfg.paths.runs_dir)!r}), 'paper-killed', {{'mode': 'paper'}}, "
        "datetime.now(timezone.utc), Path('killed.ipynb')); os.kill(os.getpid(), signal.SIGKILL)"
    )
    assert subprocess.run([sys.executable, "-c", started]).returncode == -signal.SIGKILL
    assert list(list_runs(cfg.paths.runs_dir)["status"]) == ["running"]
    (gone,) = _report_abandoned(cfg, "paper")
    (row,) = list_runs(cfg.paths.runs_dir).to_dict("records")
    assert (gone.run_id, row["status"]) == ("paper-killed", "failed") and "(killed?)" in row["error"]
    (pushed,) = [r["json"] for r in hooks.received]
    assert (pushed["level"], pushed["kind"], pushed["run"]) == ("critical", "run_failed", "paper-killed")
    mon = MonitoringLog(project.root / "state" / "paper.sqlite").frame()
    assert mon["alerts"].iloc[-1][0]["kind"] == "run_failed"
    assert _report_abandoned(cfg, "paper") == [] and len(hooks.received) == 1  # reported once
