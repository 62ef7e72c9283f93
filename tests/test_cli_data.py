"""`morningstar data ...` end to end: the installed script, a real ccxt client, the local exchange, Parquet on disk."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import HOUR_MS, Project

from morningstar_trader.store import CandleStore


def stored(project: Project, pair="BTC/USDT") -> pd.DataFrame:
    return CandleStore(project.data_dir).load("binance", pair, "1h").frame


def klines_starts(server) -> list[int]:
    return [int(r["query"]["startTime"]) for r in server.requests if r["path"] == "/api/v3/klines"]


def test_download_pages_survives_a_429_and_resumes_incrementally(project, exchange):
    full = exchange.data["BTC/USDT"]
    exchange.inject("/api/v3/klines", "429", count=1, after=2)  # the third page first gets a rate limit
    first = full.index[0].isoformat()
    out = project.run(
        "data", "download", "--pairs", "BTC/USDT", "--start", first, "--data-dir", str(project.data_dir)
    ).stdout
    assert "3500/3500 rows valid, 0 rejected, 0 gaps" in out and "+3500 new" in out
    assert [r["status"] for r in exchange.requests if r["path"] == "/api/v3/klines"] == [200, 200, 429, 200, 200]
    got = stored(project)
    assert len(got) == 3_500 and got.index[-1] == full.index[-2]  # the forming candle was not stored
    assert (got["close"].to_numpy() == full["close"].to_numpy()[:-1]).all()

    # Ten hours later the exchange has ten more closed candles; --since-last fetches only those.
    exchange.set_candles({p: pd.concat([df, _more(df, 10)]) for p, df in exchange.data.items()})
    exchange.set_now(int(full.index[-1].timestamp() * 1000) + 10 * HOUR_MS + HOUR_MS // 2)
    exchange.requests.clear()
    out = project.run(
        "data", "download", "--pairs", "BTC/USDT", "--start", first, "--since-last", "--data-dir", str(project.data_dir)
    ).stdout
    assert "+10 new, 0 changed, 3510 stored" in out, out
    assert klines_starts(exchange) == [
        int(full.index[-1].timestamp() * 1000)
    ]  # one request, from the first unstored candle


def _more(df: pd.DataFrame, n: int) -> pd.DataFrame:
    idx = pd.date_range(df.index[-1] + pd.Timedelta(hours=1), periods=n, freq="h", tz="UTC")
    last = df["close"].iloc[-1]
    return pd.DataFrame(
        {"open": last, "high": last * 1.01, "low": last * 0.99, "close": last, "volume": 1.0}, index=idx
    )


def test_download_two_pairs_from_config(project, exchange):
    out = project.run(
        "data", "download", "--start", "2024-05-20", "--end", "2024-05-21", "--data-dir", str(project.data_dir)
    ).stdout
    assert out.count("24/24 rows valid") == 2
    assert len(stored(project, "ETH/USDT")) == 24


def test_show_lists_what_is_stored(project, exchange):
    project.run("data", "download", "--start", "2024-05-20", "--data-dir", str(project.data_dir))
    out = project.run("data", "show", "--data-dir", str(project.data_dir)).stdout
    table = [line.split()[:5] for line in out.splitlines()[1:3]]
    assert table == [
        ["binance", "BTC/USDT", "1h", "exchange", "287"],
        ["binance", "ETH/USDT", "1h", "exchange", "287"],
    ], out
    assert "2 series" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pairs", "BTC/USDX"], "binance has no spot market 'BTC/USDX'; did you mean BTC/USDT"),
        (["--pairs", "btcusdt"], "pairs: pair 'btcusdt' must look like BASE/QUOTE"),
        (["--exchange", "nosuchexchange"], "id: unknown ccxt exchange id"),
        (["--timeframe", "1x"], "timeframe: timeframe '1x' is not valid"),
        (["--end", "2024-01-01"], "--end 2024-01-01 00:00:00+00:00 is not after --start"),
    ],
)
def test_download_bad_input_is_one_clear_line_and_stores_nothing(project, exchange, args, message):
    proc = project.run(
        "data", "download", "--start", "2024-05-20", *args, "--data-dir", str(project.data_dir), check=None
    )
    assert proc.returncode in (1, 2) and message in proc.stderr, proc.stderr
    assert proc.stderr.startswith("morningstar: error: ") and "Traceback" not in proc.stderr
    assert not list(project.data_dir.rglob("*.parquet"))


def test_download_with_the_exchange_down_fails_clearly(offline_project):
    proc = offline_project.run("data", "download", "--start", "2024-05-20", check=1)
    assert "load_markets failed after 3 attempts" in proc.stderr and "Traceback" not in proc.stderr


def test_unwritable_data_dir(project, exchange):
    blocker = project.root / "a-file"
    blocker.write_text("not a folder")
    proc = project.run("data", "download", "--start", "2024-05-20", "--data-dir", str(blocker / "data"), check=1)
    assert "cannot write" in proc.stderr and str(blocker) in proc.stderr


def test_bad_dates_are_refused_by_the_parser(project):
    proc = project.run("data", "download", "--start", "2024-13-45", check=2)
    assert "cannot read --start '2024-13-45'" in proc.stderr


# ---- import -------------------------------------------------------------------------------------


def test_import_rejects_bad_rows_and_keeps_the_store_as_it_was(offline_project, tmp_path):
    p = offline_project
    good = tmp_path / "good.csv"
    good.write_text(
        "timestamp,open,high,low,close,volume\n1704067200000,1,2,0.5,1.5,10\n1704070800000,1.5,2,1,1.8,11\n"
    )
    p.run("data", "import", str(good), "--exchange", "kraken", "--pair", "BTC/EUR", "--timeframe", "1h")
    path = CandleStore(p.data_dir).path("kraken", "BTC/EUR", "1h")
    before = path.read_bytes()

    bad = tmp_path / "bad.csv"
    bad.write_text(
        "Timestamp,Open,High,Low,Close,Volume\n"
        "2024-01-01T02:00:00Z,1,2,0.5,1.5,10\n2024-01-01T03:00:00Z,1,0.9,0.5,1.5,10\n"
        "2024-01-01T04:00:00Z,1,2,0.5,,10\n"
    )
    proc = p.run("data", "import", str(bad), "--exchange", "kraken", "--pair", "BTC/EUR", "--timeframe", "1h", check=1)
    assert "2 bad candle rows in kraken BTC/EUR 1h" in proc.stderr
    assert "2024-01-01 03:00:00+00:00: high below open/close/low" in proc.stderr
    assert "missing or non-numeric close" in proc.stderr and "nothing was stored" in proc.stderr
    assert path.read_bytes() == before

    proc = p.run(
        "data", "import", str(bad), "--exchange", "kraken", "--pair", "BTC/EUR", "--timeframe", "1h", "--drop-invalid"
    )
    assert (
        "1/3 rows valid, 2 rejected" in proc.stdout and "rejected 2024-01-01 03:00:00+00:00: high below" in proc.stderr
    )
    assert len(CandleStore(p.data_dir).load("kraken", "BTC/EUR", "1h")) == 3


@pytest.mark.parametrize(
    "content, message",
    [
        ("date,open,high,low,close\n2024-01-01,1,2,0.5,1.5\n", "no column for volume"),
        ("", "not a readable CSV file"),
    ],
)
def test_import_bad_files(offline_project, tmp_path, content, message):
    f = tmp_path / "x.csv"
    f.write_text(content)
    proc = offline_project.run(
        "data", "import", str(f), "--exchange", "x", "--pair", "BTC/EUR", "--timeframe", "1d", check=1
    )
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_sample_then_show_offline(offline_project):
    out = offline_project.run("data", "sample", "--days", "10").stdout
    assert out.count("240 synthetic 1h candles") == 3 and "SYNTHETIC" in out
    out = offline_project.run("data", "show").stdout
    assert ["synthetic", "SOL/USDT", "1h", "synthetic", "240"] in [line.split()[:5] for line in out.splitlines()], out
