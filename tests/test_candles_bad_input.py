"""Issue 16, candle files and frames: each listed repro as a named regression test, through the API and the real CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from morningstar_trader.candles import CandleFileError, check_candles, read_candles_file, validated_bars
from morningstar_trader.store import CandleStore, StoreError
from morningstar_trader.types import Bars, MorningstarError, TimeframeError, parse_timeframe

HEADER = "timestamp,open,high,low,close,volume\n"
ROW = ",1,2,0.5,1.5,10\n"


def write(tmp_path: Path, text: str, name: str = "c.csv") -> Path:
    (path := tmp_path / name).write_text(text)
    return path


def import_(
    project,
    path: Path,
    *args: str,
    check: int | None = None,
    exchange: str = "kraken",
    pair: str = "BTC/EUR",
    timeframe: str = "1h",
):
    return project.run(
        "data",
        "import",
        str(path),
        "--exchange",
        exchange,
        "--pair",
        pair,
        "--timeframe",
        timeframe,
        *args,
        check=check,
    )


def one_error_line(proc, status: int, *fragments: str) -> None:
    """The CLI's promise for bad input: exit `status`, one `morningstar: error:` message naming the problem, no
    traceback. (A config error lists its keys on indented lines below, as the README shows.)"""
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("rejected ")]
    assert lines[0].startswith("morningstar: error: ") and all(line.startswith("  ") for line in lines[1:]), proc.stderr
    assert all(f in proc.stderr for f in fragments), proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr) < 2_000


def stored_files(project) -> list[Path]:
    return sorted(project.data_dir.rglob("*.parquet")) if project.data_dir.exists() else []


# ---- timestamps and zones -------------------------------------------------------------------------


def test_iso_offsets_that_change_at_a_dst_switch_are_read_in_utc(offline_project, tmp_path):
    """Once "Mixed timezones detected": +01:00 then +02:00 across the spring switch is valid input, each row in UTC."""
    text = HEADER + "".join(
        f"{t}{ROW}"
        for t in (
            "2024-03-31T00:00:00+01:00",
            "2024-03-31T01:00:00+01:00",
            "2024-03-31T03:00:00+02:00",
            "2024-03-31T04:00:00+02:00",
        )
    )
    path = write(tmp_path, text)
    want = list(pd.date_range("2024-03-30 23:00", periods=4, freq="h", tz="UTC"))
    assert read_candles_file(path)["timestamp"].tolist() == want
    proc = import_(offline_project, path, check=0)
    assert "4/4 rows valid, 0 rejected, 0 gaps" in proc.stdout
    assert list(CandleStore(offline_project.data_dir).load("kraken", "BTC/EUR", "1h").frame.index) == want


@pytest.mark.parametrize(
    "naive, what",
    [
        ("2024-10-27 02:00:00", "ambiguous: clocks go back, 02:00 happens twice"),
        ("2024-03-31 02:00:00", "nonexistent: clocks go forward, 02:00 never happens"),
    ],
)
def test_tz_with_a_naive_time_on_a_dst_switch_is_refused_naming_the_row(offline_project, tmp_path, naive, what):
    path = write(tmp_path, HEADER + f"2024-03-30 23:00:00{ROW}{naive}{ROW}")
    with pytest.raises(CandleFileError, match=rf"{naive} \(row 2\) fall in a daylight-saving switch"):
        read_candles_file(path, tz="Europe/Berlin")
    one_error_line(import_(offline_project, path, "--tz", "Europe/Berlin"), 1, naive, "(row 2)", "Europe/Berlin")
    assert not stored_files(offline_project)
    assert len(read_candles_file(path, tz="UTC")) == 2  # the same wall-clock times in UTC are one instant each


@pytest.mark.parametrize(
    "tz", ["Mars/Base", "", "Europe", "../../etc/passwd", "utc", "Europe/Berlin\x01", "x" * 10_000]
)
def test_unknown_or_empty_tz_is_refused(tmp_path, tz):
    path = write(tmp_path, HEADER + f"1704067200{ROW}")
    with pytest.raises(CandleFileError, match="is unknown; use an IANA name"):
        read_candles_file(path, tz=tz)


@pytest.mark.parametrize("tz", ["Mars/Base", ""])
def test_cli_unknown_or_empty_tz_is_a_bad_argument(offline_project, tmp_path, tz):
    path = write(tmp_path, HEADER + f"1704067200{ROW}")
    one_error_line(import_(offline_project, path, "--tz", tz), 2, f"time zone {tz!r} is unknown")
    assert not stored_files(offline_project)


def test_fractional_epoch_seconds_are_rejected_never_truncated(offline_project, tmp_path):
    """`1700002800.5` was stored as 23:00:00; it is half a second past the grid, so the row is rejected."""
    path = write(tmp_path, HEADER + f"1700002800{ROW}1700006400.5{ROW}1700010000.0{ROW}")
    raw = read_candles_file(path)
    assert raw["timestamp"][1] == pd.Timestamp("2023-11-15 00:00:00.5", tz="UTC")
    bars, report = validated_bars(raw, "kraken", "BTC/EUR", "1h", drop_invalid=True)
    assert report.rejected["reason"].tolist() == ["off the 1h grid"] and len(bars) == 2
    proc = import_(offline_project, path)
    one_error_line(
        proc, 1, "1 bad candle rows", "2023-11-15 00:00:00.500000+00:00: off the 1h grid", "nothing was stored"
    )
    assert not stored_files(offline_project)
    # a fraction finer than a nanosecond cannot be kept exactly: unreadable, not rounded onto the grid
    path = write(tmp_path, HEADER + f"1700002800.0000000001{ROW}")
    assert read_candles_file(path)["timestamp"].isna().all()


@pytest.mark.parametrize(
    "cell", ["-5", "garbage", "1e20", "99999999999999999999", "-1e12", "inf", "", "2024-13-45T00:00"]
)
def test_timestamps_pandas_could_not_read_are_rejected_per_row(cell, tmp_path):
    """Once `OutOfBoundsDatetime` / `DateParseError` from pandas; now that row alone is rejected with a reason."""
    path = write(tmp_path, HEADER + f"1704067200{ROW}{cell}{ROW}1704070800{ROW}")
    bars, report = validated_bars(read_candles_file(path), "kraken", "BTC/EUR", "1h", drop_invalid=True)
    assert len(bars) == 2 and report.rejected["reason"].tolist() == ["unreadable timestamp"]
    # the same cells in a frame handed to check_candles (text or numbers)
    for value in (cell, pd.to_numeric(cell, errors="coerce")):
        frame = pd.DataFrame(
            {
                "timestamp": pd.Series(["2024-01-01T00:00:00Z", value], dtype=object),
                "open": 1.0,
                "high": 2.0,
                "low": 0.5,
                "close": 1.5,
                "volume": 1.0,
            }
        )
        ok, report = check_candles(frame, "1h")
        assert len(ok) == 1 and report.rejected["reason"].str.contains("unreadable timestamp|off the 1h grid").all()


def test_one_unreadable_timestamp_in_an_epoch_file_rejects_only_that_row(offline_project, tmp_path):
    rows = [1704067200000 + i * 3_600_000 for i in range(5)]
    text = HEADER + "".join(f"{t}{ROW}" for t in rows[:2]) + f"garbage{ROW}" + "".join(f"{t}{ROW}" for t in rows[2:])
    path = write(tmp_path, text)
    assert read_candles_file(path)["timestamp"].isna().tolist() == [False, False, True, False, False, False]
    proc = import_(offline_project, path, "--drop-invalid", check=0)
    assert "5/6 rows valid, 1 rejected" in proc.stdout and "rejected NaT: unreadable timestamp" in proc.stderr
    assert len(CandleStore(offline_project.data_dir).load("kraken", "BTC/EUR", "1h")) == 5


def test_epoch_cells_of_another_size_are_rejected_not_the_whole_file(tmp_path):
    """One column has one unit (the unit of most cells): a seconds value in a millisecond file is one bad row, not an
    error."""
    path = write(tmp_path, HEADER + f"1704067200000{ROW}1704070800{ROW}1704074400000{ROW}")
    assert read_candles_file(path)["timestamp"].isna().tolist() == [False, True, False]


# ---- columns, lines, timeframes ------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, names",
    [
        ("timestamp,open,open,high,low,close,volume", "['open', 'open.1']"),
        ("timestamp,Open,open,high,low,close,volume", "['Open', 'open']"),
        ("date,Timestamp,timestamp,open,high,low,close,volume", "timestamp ['Timestamp', 'timestamp']"),
        ("timestamp,open,high,low,close,volume,Volume", "volume ['volume', 'Volume']"),
    ],
)
def test_duplicate_column_names_are_a_clear_error(tmp_path, header, names):
    """Once an `AttributeError`; a column the reader needs, named twice, is ambiguous and the file is refused."""
    n = header.count(",") + 1
    path = write(tmp_path, f"{header}\n1704067200" + ",1" * (n - 1) + "\n")
    with pytest.raises(CandleFileError, match="more than one column for") as e:
        read_candles_file(path)
    assert names in str(e.value)


def test_cli_duplicate_column_names(offline_project, tmp_path):
    path = write(tmp_path, "timestamp,Open,open,high,low,close,volume\n1704067200,1,1,2,0.5,1.5,1\n")
    one_error_line(import_(offline_project, path), 1, "more than one column for open ['Open', 'open']")


def test_duplicate_columns_in_feather_and_in_frames(tmp_path):
    table = pa.table(
        [pa.array([1704067200000]), *[pa.array([1.0])] * 6],
        names=["date", "open", "high", "low", "close", "volume", "close"],
    )
    feather.write_feather(table, path := tmp_path / "dup.feather")
    with pytest.raises(CandleFileError, match=r"more than one column for close \['close', 'close'\]"):
        read_candles_file(path)
    frame = pd.DataFrame(
        [[pd.Timestamp("2024-01-01", tz="UTC"), 1.0, 2.0, 0.5, 1.5, 1.0, 1.0]],
        columns=["timestamp", "open", "high", "low", "close", "volume", "volume"],
    )
    with pytest.raises(MorningstarError, match=r"\['volume'\] more than once"):
        check_candles(frame, "1h")


def test_rows_longer_than_the_header_are_refused_not_shifted(tmp_path):
    """pandas silently takes the extra first field of every row as an index, shifting each value one column."""
    path = write(tmp_path, HEADER + "x,1704067200,1,2,0.5,1.5,10\ny,1704070800,1,2,0.5,1.5,10\n")
    with pytest.raises(CandleFileError, match="more fields than the header"):
        read_candles_file(path)


def test_a_line_over_131072_characters_is_no_traceback(offline_project, tmp_path):
    """Once `_csv.Error: field larger than field limit (131072)` from the banner check."""
    long = "1" * 140_000
    data = write(tmp_path, HEADER + f"1704067200{ROW}1704070800,1,2,0.5,1.5,{long}\n", "data.csv")
    report = validated_bars(read_candles_file(data), "kraken", "BTC/EUR", "1h", drop_invalid=True)[1]
    assert report.rejected["reason"].tolist() == [
        "missing or non-numeric volume"
    ]  # an infinite volume: one row rejected
    one_error_line(import_(offline_project, data), 1, "1 bad candle rows", "missing or non-numeric volume")
    first = write(tmp_path, f"timestamp,open,high,low,close,volume,{long}\n1704067200{ROW}", "first.csv")
    assert len(read_candles_file(first)) == 1  # a long header name is just ignored
    banner = write(tmp_path, f"{long}\n" + HEADER + f"1704067200{ROW}", "banner.csv")  # a long banner line is skipped
    assert len(read_candles_file(banner)) == 1
    second = write(tmp_path, f"{long}\n{long}\n", "second.csv")
    one_error_line(import_(offline_project, second), 1, "no column for timestamp, open, high, low, close, volume")
    assert not stored_files(offline_project)


@pytest.mark.parametrize("timeframe", ["99999999999999w", "366d", "9" * 5000 + "s"])
def test_a_huge_timeframe_is_the_documented_timeframe_error(timeframe):
    """Once pandas' `OutOfBoundsTimedelta` (or int()'s digit limit) instead of the documented error."""
    with pytest.raises(TimeframeError, match="is not valid; allowed: a count and a unit"):
        parse_timeframe(timeframe)
    frame = pd.DataFrame(
        {
            "timestamp": [pd.Timestamp("2024-01-01", tz="UTC")],
            "open": 1.0,
            "high": 2.0,
            "low": 0.5,
            "close": 1.5,
            "volume": 1.0,
        }
    )
    with pytest.raises(TimeframeError):
        check_candles(frame, timeframe)


def test_cli_a_huge_timeframe_is_a_bad_argument(offline_project, tmp_path):
    path = write(tmp_path, HEADER + f"1704067200{ROW}")
    one_error_line(
        import_(offline_project, path, timeframe="99999999999999w"), 2, "timeframe '99999999999999w' is not valid"
    )


# ---- the store -------------------------------------------------------------------------------------


def test_an_all_rejected_import_into_an_existing_file_is_refused_and_the_file_untouched(offline_project, tmp_path):
    """Once a pandas index-dtype `ValueError` in `store.save`."""
    good = write(tmp_path, HEADER + f"1704067200{ROW}1704070800{ROW}", "good.csv")
    import_(offline_project, good, check=0)
    path = CandleStore(offline_project.data_dir).path("kraken", "BTC/EUR", "1h")
    before = path.read_bytes()
    bad = write(tmp_path, HEADER + "1704074400,1,0.5,0.6,1.5,10\ngarbage,1,2,0.5,1.5,10\n", "bad.csv")
    proc = import_(offline_project, bad, "--drop-invalid")
    one_error_line(proc, 1, "2 bad candle rows", "all of its rows", "high below open/close/low", "nothing was stored")
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == [path.name]
    empty = write(tmp_path, HEADER, "empty.csv")
    one_error_line(import_(offline_project, empty, "--drop-invalid"), 1, "no candle rows; nothing was stored")
    assert path.read_bytes() == before
    store = CandleStore(offline_project.data_dir)
    no_rows = validated_bars(read_candles_file(bad), "kraken", "BTC/EUR", "1h", drop_invalid=True)[0]
    with pytest.raises(StoreError, match="no candles to save for kraken BTC/EUR 1h"):
        store.save(no_rows, "import")
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "exchange, pair",
    [
        ("..", "BTC/EUR"),
        ("kraken", "../../../escaped"),
        ("kraken", ".."),
        ("../..", "A/B"),
        ("a/../..", "A/B"),
        (".hidden", "A/B"),
    ],
)
def test_dotdot_names_cannot_write_outside_processed(tmp_path, exchange, pair):
    data = tmp_path / "deep" / "data"
    frame = pd.DataFrame(
        {"open": [1.0], "high": [2.0], "low": [0.5], "close": [1.5], "volume": [1.0]},
        index=pd.DatetimeIndex([pd.Timestamp("2024-01-01", tz="UTC")], name="timestamp").as_unit("ns"),
    )
    with pytest.raises(StoreError, match="is not allowed in the store"):
        CandleStore(data).save(Bars(exchange, pair, "1h", frame), "import")
    with pytest.raises(StoreError, match="is not allowed in the store"):
        CandleStore(data).load(exchange, pair, "1h")
    assert not list(tmp_path.rglob("*.parquet")) and not data.exists()


@pytest.mark.parametrize("exchange, pair", [("kra\x00ken", "BTC/EUR"), ("kraken", "BTC/EUR\x00"), ("", "BTC/EUR")])
def test_a_nul_byte_or_empty_name_is_a_store_error(tmp_path, exchange, pair):
    """Once `ValueError: embedded null byte` from the file system."""
    with pytest.raises(StoreError, match="is not allowed in the store; use"):
        CandleStore(tmp_path).path(exchange, pair, "1h")


def test_cli_refuses_dotdot_names_as_bad_arguments(offline_project, tmp_path):
    path = write(tmp_path, HEADER + f"1704067200{ROW}")
    one_error_line(import_(offline_project, path, exchange=".."), 2, "exchange name '..' is not allowed in the store")
    one_error_line(import_(offline_project, path, pair="../../x"), 2, "pair '../../x' must look like BASE/QUOTE")
    assert not list(offline_project.root.rglob("*.parquet"))


def test_check_candles_reads_numbers_and_objects_without_raising():
    """Frames from any caller: nullable ints, bools, complex numbers and objects are non-numeric, never an exception."""
    frame = pd.DataFrame(
        {
            "timestamp": pd.array([1704067200, None, 1704070800], dtype="Int64"),
            "open": pd.array([1, 2, None], dtype="Int64"),
            "high": [True, 2.0, 2.0],
            "low": pd.Series([0.5, 1 + 1j, object()], dtype=object),
            "close": ["1", "x", "1.5"],
            "volume": np.array([1.0, 1.0, 1.0], dtype=np.float32),
        }
    )
    ok, report = check_candles(frame, "1h")
    assert len(ok) == 0 and len(report.rejected) == 3
    assert report.rejected["reason"].tolist() == [
        "missing or non-numeric high",  # True is no price
        "missing or non-numeric open; missing or non-numeric low",
        "unreadable timestamp; missing or non-numeric low; missing or non-numeric close",
    ]
