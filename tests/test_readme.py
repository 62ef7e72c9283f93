"""The README's first session, command by command, on a fresh project that holds what `make demo` leaves: the
synthetic sample candles (stored as exchange `synthetic`) and a model under models/default (a tiny untrained one: the
commands must work whatever the model learned)."""

from __future__ import annotations

import re
import shlex

import yaml
from artifact_kit import tiny_artifact
from conftest import ROOT, TINY, Project, write_config

README = (ROOT / "README.md").read_text()


def first_session() -> list[list[str]]:
    "The commands of the README's `## Your first session` block, without the `.venv/bin/morningstar` in front."
    section = README.split("## Your first session", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = [line.split("#")[0].strip() for line in block.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line]


def test_the_readme_is_short_and_names_what_a_newcomer_trips_over():
    assert len(README.splitlines()) <= 300
    assert "`synthetic`" in README and ".venv/bin/morningstar" in README
    for guide in re.findall(r"\]\((docs/[A-Z_]+\.md)", README):
        assert (ROOT / guide).is_file(), guide


def test_the_first_session_works_after_the_demo(tmp_path):
    commands = first_session()
    assert len(commands) == 5 and all(c[0] in {"data", "models", "backtest", "runs"} for c in commands), commands
    project = Project(tmp_path, write_config(tmp_path, "http://127.0.0.1:9", yaml.safe_dump(TINY)))
    project.run("data", "sample", "--start", "2024-05-01", "--days", "90", "--pairs", "BTC/USDT", "ETH/USDT")
    tiny_artifact(tmp_path / "models" / "default" / "20240601T000000Z")
    out = {" ".join(c[:2]): project.run(*c).stdout for c in commands}
    assert "synthetic" in out["data show"] and "BTC/USDT" in out["data show"]
    assert "Model card" in out["models show"]
    backtests = [o for k, o in out.items() if k.startswith("backtest")]
    assert len(backtests) == 2 and all("written to" in o for o in backtests)
    listed = out["runs list"].splitlines()[1:]  # both backtests are runs now
    assert len(listed) == 2 and all(row.startswith("backtest-") for row in listed)
