"""Real candles through `morningstar data import`: the EUR/USD hourly and GOOG daily files that backtesting.py ships."""

from __future__ import annotations

from pathlib import Path

import backtesting
import pandas as pd
import pytest

from morningstar_trader.store import CandleStore

DATA = Path(backtesting.__file__).parent / "test"


@pytest.mark.parametrize("name, pair, timeframe", [("EURUSD.csv", "EUR/USD", "1h"), ("GOOG.csv", "GOOG/USD", "1d")])
def test_import_real_files(offline_project, name, pair, timeframe):
    proc = offline_project.run(
        "data", "import", str(DATA / name), "--exchange", "backtesting", "--pair", pair, "--timeframe", timeframe
    )
    source = pd.read_csv(DATA / name, index_col=0, parse_dates=True)
    bars = CandleStore(offline_project.data_dir).load("backtesting", pair, timeframe)
    assert f"{len(source)}/{len(source)} rows valid, 0 rejected" in proc.stdout
    assert len(bars) == len(source)
    assert (bars.frame.index == source.index.tz_localize("UTC")).all()
    assert (bars.frame[["open", "high", "low", "close", "volume"]].to_numpy() == source.to_numpy(dtype=float)).all()
    # Markets that close on weekends leave gaps in the grid: reported, never filled.
    step = pd.Timedelta(timeframe.replace("1d", "1D"))
    expected_gaps = int((source.index.to_series().diff() > step).sum())
    assert expected_gaps > 30 and f", {expected_gaps} gaps (" in proc.stdout


def test_reimport_changes_nothing(offline_project):
    args = (
        "data",
        "import",
        str(DATA / "GOOG.csv"),
        "--exchange",
        "backtesting",
        "--pair",
        "GOOG/USD",
        "--timeframe",
        "1d",
    )
    offline_project.run(*args)
    assert "+0 new, 0 changed, 2148 stored" in offline_project.run(*args).stdout
