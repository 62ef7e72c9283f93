"""`morningstar alt download|import|show` against the local alternative-data server: a few runs of the installed
script, the rest through `cli.main` in this process (the same code, without a 10 s interpreter start each)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import Project, write_config
from local_alt import LocalAlt, post

from morningstar_trader.cli import main

FIX = Path(__file__).parent / "fixtures" / "alt"


@pytest.fixture
def alt_project(tmp_path):
    with LocalAlt() as server:
        now = pd.Timestamp.now(tz="UTC").floor("D")
        server.fng = [(int((now - pd.Timedelta(days=i)).timestamp()), 40 + i) for i in range(30)]
        server.posts = [post(i, f"Bitcoin news {i}", now - pd.Timedelta(hours=i), ("BTC",)) for i in range(5)]
        cfg = write_config(tmp_path, extra=f"alt:\n  fear_greed:\n    api_url: {server.base_url}\n")
        yield Project(tmp_path, cfg), server


def run(project: Project, capsys, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--config", str(project.config), "--data-dir", str(project.data_dir)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_download_show_and_incremental(alt_project, monkeypatch, capsys):
    project, server = alt_project
    assert "fear_greed fear_greed: +30 new rows" in project.run("alt", "download", "fear_greed").stdout
    assert "+0 new rows" in run(project, capsys, "alt", "download", "fear_greed")[1]
    monkeypatch.setenv("MORNINGSTAR_CRYPTOPANIC_TOKEN", server.token)
    assert (
        "news headlines: +5 new rows"
        in run(project, capsys, "alt", "download", "news", "--api-url", server.base_url)[1]
    )
    show = project.run("alt", "show").stdout
    assert "fear_greed" in show and "headlines" in show and "newest_age" in show


def test_download_failures_are_one_line(alt_project, monkeypatch, capsys):
    project, server = alt_project
    server.inject("/fng/", "garbage", count=3)
    bad = project.run("alt", "download", "fear_greed", check=1)
    last = bad.stderr.strip().splitlines()[-1]  # above it: the progress bar's lines
    assert last.startswith("morningstar: error: fear_greed GET /fng/: the answer is not JSON")
    assert [l for l in bad.stderr.splitlines() if "error" in l] == [last]
    assert not (project.data_dir / "processed/alt/fear_greed").exists()
    monkeypatch.setenv("MORNINGSTAR_CRYPTOPANIC_TOKEN", "WRONG-SECRET-9")
    code, _, err = run(project, capsys, "alt", "download", "news", "--api-url", server.base_url)
    assert code == 1 and "HTTP 401" in err and "WRONG-SECRET-9" not in err
    code, _, err = run(project, capsys, "alt", "download", "fear_greed", "--api-url", "ftp://x")
    assert code == 2 and "http:// or https://" in err


def test_import_the_quirks(alt_project, capsys):
    project, _ = alt_project
    out = project.run(
        "alt", "import", "funding", str(FIX / "raw_binance_solusdt_funding_localtime.csv"), "--tz", "Europe/Berlin"
    ).stdout
    assert "funding SOL: 3 rows read, +3 new" in out
    assert (
        "open_interest BTC-open_interest_value: 4 rows read, +4 new"
        in run(project, capsys, "alt", "import", "open_interest", str(FIX / "heun630_btc_open_interest_daily.csv"))[1]
    )
    run(project, capsys, "alt", "import", "fear_greed", str(FIX / "fear_and_greed_index.csv"))
    run(project, capsys, "alt", "import", "news", str(FIX / "cryptonews_sample.csv"), "--tz", "UTC")
    assert (
        "+0 new, 3 stored"
        in run(project, capsys, "alt", "import", "fear_greed", str(FIX / "fear_and_greed_index.csv"))[1]
    )
    sol = pd.read_parquet(project.data_dir / "processed/alt/funding/SOL.parquet")
    assert sol["event_time"].dt.strftime("%d %H:%M").tolist() == [
        "28 16:00",
        "29 00:00",
        "29 08:00",
    ]  # across the DST change
    assert sol["funding_rate"].tolist() == [0.0001, 1.235e-05, -9.65e-06]
    news = pd.read_parquet(project.data_dir / "processed/alt/news/headlines.parquet")
    assert news["title"].tolist() == ["Ethereum steady", "Bitcoin drops below USD 40K"]
    show = run(project, capsys, "alt", "show")[1]
    oi = next(line for line in show.splitlines() if "open_interest_value" in line)
    assert oi.split()[-1] == "1"  # 2024-01-03 .. 2024-01-06: one gap


@pytest.mark.parametrize(
    "args,why",
    [
        (("funding", "raw_binance_solusdt_funding_localtime.csv"), "pass --tz"),
        (("fear_greed", "fear_greed_naive.csv"), "without a time zone"),
        (("funding", "BTCUSDT_bad_value.csv"), "is 'n/a'; allowed: a finite number"),
        (("onchain", "fear_and_greed_index.csv"), "imports as fear_greed, not onchain"),
        (("news", "missing.csv"), "no such file"),
    ],
)
def test_import_bad_files_exit_2_and_store_nothing(tmp_path, capsys, args, why):
    project = Project(tmp_path, write_config(tmp_path))
    code, _, err = run(project, capsys, "alt", "import", args[0], str(FIX / args[1]))
    assert code == 2 and err.startswith("morningstar: error:") and why in err and err.count("\n") == 1
    assert not (project.data_dir / "processed/alt").exists()
