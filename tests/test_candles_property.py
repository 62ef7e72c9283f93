"""Property tests (issue 16): candle files and frames, generated as a careless user or an attacker would write them.

Reading: CSV text and bytes with random headers (case, padding, aliases, banner, BOM, separators, duplicates),
timestamps of every kind (epochs in s/ms/µs, fractions, ISO with and without offsets, naive times in a zone, garbage)
and numbers of every kind. Validation: frames whose columns have any dtype. Asserted for every case:
- only MorningstarError subclasses escape;
- every accepted candle satisfies every invariant (UTC, on the grid, strictly increasing, finite positive prices, high
>= max(open, close, low), low <= min(open, close), volume >= 0) and is a `Bars` frame;
- every rejected row has a reason, and rows in = rows kept + rows rejected;
- nothing is invented: an accepted candle is exactly the time and values a generated row meant (a row whose time or
values meant nothing readable is never accepted);
- saving the accepted candles to the store and loading them back gives the same frame.

`pytest -m slow tests/test_candles_property.py` runs 1,000 cases per entry point; the unmarked variants run 50.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from morningstar_trader.candles import check_candles, read_candles_file
from morningstar_trader.store import CandleStore
from morningstar_trader.types import BAR_COLUMNS, Bars, MorningstarError, parse_timeframe

TIMEFRAMES = ["1s", "1m", "15m", "1h", "4h", "1d", "1w"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
MONDAY = pd.Timestamp("2024-01-01", tz="UTC")  # on every grid, weeks included
FAST = settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=1_000, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
BAD_NUMBERS = [
    "",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "-1.5",
    "abc",
    "1e400",
    "True",
    "0x10",
    "--1",
    "1.2.3",
    '"1,5"',
    "1_000",
    "٣",
    "None",
    "-0.0001",
]


@dataclass
class Row:
    """One generated row: the cells as written, and what they mean (None: nothing readable)."""

    cells: dict[str, object]
    time: pd.Timestamp | None
    values: tuple[float, ...] | None


# ---- the invariants and the oracle ----------------------------------------------------------------


def assert_invariants(ok: pd.DataFrame, timeframe: str) -> None:
    step = parse_timeframe(timeframe)
    idx = ok.index
    assert isinstance(idx, pd.DatetimeIndex) and str(idx.tz) == "UTC" and idx.unit == "ns" and idx.name == "timestamp"
    assert idx.is_monotonic_increasing and idx.is_unique and not idx.hasnans
    anchor = (
        pd.Timestamp("1970-01-05", tz="UTC")
        if step % pd.Timedelta(weeks=1) == pd.Timedelta(0)
        else pd.Timestamp(0, tz="UTC")
    ).value
    assert ((idx.asi8 - anchor) % step.value == 0).all()
    assert tuple(ok.columns) == BAR_COLUMNS and all(dt == np.float64 for dt in ok.dtypes)
    o, h, l, c, v = (ok[k].to_numpy() for k in BAR_COLUMNS)
    assert np.isfinite(ok.to_numpy()).all()
    assert ((o > 0) & (h > 0) & (l > 0) & (c > 0)).all()
    assert (h >= np.maximum(np.maximum(o, c), l)).all() and (l <= np.minimum(o, c)).all() and (v >= 0).all()


def assert_report(ok: pd.DataFrame, report, n_rows: int) -> None:
    assert report.rows_in == n_rows and report.rows_ok == len(ok) and len(ok) + len(report.rejected) == n_rows
    assert report.rejected["reason"].map(lambda r: isinstance(r, str) and len(r) > 0).all()


def assert_nothing_invented(ok: pd.DataFrame, rows: list[Row]) -> None:
    meant = {(r.time.value, r.values) for r in rows if r.time is not None and r.values is not None}
    for t, values in zip(ok.index.asi8, ok.itertuples(index=False)):
        assert (int(t), tuple(float(x) for x in values)) in meant, (pd.Timestamp(t, tz="UTC"), tuple(values))


def assert_store_round_trip(ok: pd.DataFrame, timeframe: str) -> None:
    if not len(ok):
        return
    bars = Bars("fuzz", "BTC/USDT", timeframe, ok)
    with tempfile.TemporaryDirectory() as d:
        store = CandleStore(d)
        store.save(bars, "import")
        pd.testing.assert_frame_equal(store.load("fuzz", "BTC/USDT", timeframe).frame, ok, check_freq=False)


# ---- generators: times and numbers ----------------------------------------------------------------


@st.composite
def instants(draw, timeframe: str, parity: int) -> pd.Timestamp:
    """A time on the grid: even multiples of the step for rows that should be kept, odd ones for the others."""
    k = draw(st.integers(-200, 2_000)) * 2 + parity
    return MONDAY + k * parse_timeframe(timeframe)


TIME_FORMS = st.sampled_from(
    ["s", "ms", "us", "s.000", "+s", "z", "z.000", "offset", "naive", "naive_t", "offset_compact"]
)
PADDING = st.integers(0, 5)  # strategies built once: building them per draw was most of the generation time


@st.composite
def time_text(draw, t: pd.Timestamp, tz: str) -> str:
    """One readable way of writing instant `t` (naive forms are wall-clock times in `tz`)."""
    secs, ns = divmod(t.value, 10**9)
    assert ns == 0
    kind = draw(TIME_FORMS)
    local = t.tz_convert(tz)
    text = {
        "s": str(secs),
        "ms": str(secs * 1000),
        "us": str(secs * 1_000_000),
        "s.000": f"{secs}.000",
        "+s": f"+{secs}",
        "z": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "z.000": t.strftime("%Y-%m-%dT%H:%M:%S.000000000Z"),
        "offset": local.isoformat(),
        "naive": local.tz_localize(None).isoformat(sep=" "),
        "naive_t": local.tz_localize(None).isoformat(),
        "offset_compact": local.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }[kind]
    pad = draw(PADDING)
    return ["", " ", "\t"][pad % 3] + text + ["", " "][pad // 3]


@st.composite
def off_grid_text(draw, timeframe: str) -> tuple[str, pd.Timestamp]:
    """A readable time that is not on the grid: whole seconds inside a step, or a fraction of a second."""
    base = draw(instants(timeframe, 0))
    step_s = int(parse_timeframe(timeframe).total_seconds())
    if step_s > 1 and draw(st.booleans()):
        t = base + pd.Timedelta(seconds=draw(st.integers(1, step_s - 1)))
        return str(t.value // 10**9), t
    digits = draw(st.text("0123456789", min_size=1, max_size=9).filter(lambda d: d.strip("0")))
    t = base + pd.Timedelta(nanoseconds=int(digits.ljust(9, "0")))
    return f"{base.value // 10**9}.{digits}", t


def garbage_times() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(
            [
                "",
                "garbage",
                "-5",
                "-1704067200",
                "1.7040672e9",
                "1e20",
                "9" * 19,
                "9" * 400,
                "nan",
                "NaT",
                "None",
                "inf",
                "-inf",
                "2024-13-45T00:00:00Z",
                "2016-12-31T23:59:60Z",
                "3000-01-01T00:00:00Z",
                "1500-01-01T00:00:00Z",
                "2024-01-01T00:00:00.0000000001Z",
                "1704067200.0000000001",
                "2024-W01",
                "1704067200,5",
                "0x65920080",
                "1704067200e0",
                "24:00",
                "T",
                "Z",
                "+",
                ".",
                "１７０４０６７２００",
            ]
        ),
        st.text(alphabet=st.characters(blacklist_characters=',"\r\n', blacklist_categories=["Cs"]), max_size=30).filter(
            lambda s: not s.strip().lstrip("+").replace(".", "", 1).isdigit()
        ),
    )  # a plain number would be a real epoch


LOWS, SPREADS = (
    st.floats(1e-9, 1e12, allow_nan=False, allow_infinity=False),
    st.sampled_from([1.0, 1.0 + 1e-12, 1.01, 2.0, 1e3]),
)
UNIT, VOLUMES = st.floats(0, 1), st.one_of(st.just(0.0), st.floats(0, 1e15, allow_nan=False, allow_infinity=False))


@st.composite
def candle_values(draw) -> tuple[float, ...]:
    """Finite positive prices with high >= max(open, close, low), low <= min(open, close), volume >= 0."""
    low = draw(LOWS)
    high = low * draw(SPREADS)
    open_, close = (min(high, max(low, low + (high - low) * draw(UNIT))) for _ in range(2))
    return (open_, high, low, close, draw(VOLUMES))


NUMBER_FORMS = st.integers(0, 31)


def number_text(draw, x: float) -> str:
    """`x` as a CSV cell: repr, 17 significant digits or a leading '+', maybe padded; zero maybe as '0'."""
    form = draw(NUMBER_FORMS)
    text = "0" if x == 0 and form & 4 else [repr(x), repr(x), f"{x:.17g}", f"+{x!r}"][form & 3]
    return (" " if form & 8 else "") + text + (" " if form & 16 else "")


# ---- CSV files --------------------------------------------------------------------------------------

ROW_KINDS = st.sampled_from(["good", "good", "good", "odd", "off", "bad_time", "bad_value", "broken"])


@st.composite
def csv_files(draw):
    timeframe, tz = draw(st.sampled_from(TIMEFRAMES)), draw(st.sampled_from(ZONES))
    base = draw(st.sampled_from([None, "BTC"]))
    rows: list[Row] = []
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(ROW_KINDS)
        values = draw(candle_values())
        cells = {k: number_text(draw, x) for k, x in zip(BAR_COLUMNS, values)}
        if kind in ("good", "odd", "bad_value", "broken"):
            t = draw(instants(timeframe, 0 if kind == "good" else 1))
            cells["timestamp"] = draw(time_text(t, tz))
        elif kind == "off":
            cells["timestamp"], t = draw(off_grid_text(timeframe))
        else:
            cells["timestamp"], t = draw(garbage_times()), None
        if kind == "bad_value":
            cells[draw(st.sampled_from(BAR_COLUMNS))] = draw(st.sampled_from(BAD_NUMBERS))
            values = None
        elif kind == "broken":  # an invariant broken by valid numbers: high below low, or a non-positive price
            o, h, l, c, v = values
            values = draw(st.sampled_from([(o, l * 0.5, l, c, v), (o, h, l, c, -1.0), (0.0, h, l, c, v)]))
            cells = {**cells, **{k: number_text(draw, x) for k, x in zip(BAR_COLUMNS, values)}}
        rows.append(Row(cells, t, values))
    if draw(st.booleans()):  # now and then rows with the same time, copies or not
        for i in draw(st.lists(st.integers(0, max(len(rows) - 1, 0)), max_size=3)):
            if rows:
                rows.append(rows[i])

    # the header: aliases, case, padding, extra columns, column order
    time_name = draw(st.sampled_from(["timestamp", "Timestamp", " unix ", "open_time", "Date", "datetime", "TIME", ""]))
    names = {
        "timestamp": time_name,
        **{k: draw(st.sampled_from([k, k.upper(), k.title(), f" {k} "])) for k in BAR_COLUMNS},
    }
    if base and draw(st.booleans()):
        names["volume"] = f"Volume {base}"
    order = ["timestamp"] + draw(st.permutations(list(BAR_COLUMNS) + ["symbol"] * draw(st.integers(0, 1))))
    if time_name == "":
        order = ["timestamp"] + [c for c in order if c != "timestamp"]  # the unnamed index comes first
    elif draw(st.booleans()):
        order = draw(st.permutations(order))
    header = [names.get(c, c) for c in order]
    duplicate = draw(st.sampled_from([None] * 8 + ["open", "volume"]))
    if duplicate:
        header.append(names[duplicate].swapcase())
    sep, eol = draw(st.sampled_from([","] * 8 + [";", "\t"])), draw(st.sampled_from(["\n", "\r\n"]))
    lines = [sep.join(header)]
    for r in rows:
        cells = [str(r.cells.get(c, "BTCUSDT")) for c in order] + ([str(r.cells[duplicate])] if duplicate else [])
        lines.append(sep.join(cells))
    garbage = draw(st.lists(st.text(max_size=60), max_size=2)) if draw(st.integers(0, 9)) == 0 else []
    for g in garbage:
        lines.insert(draw(st.integers(1, len(lines))), g)
    text = eol.join(lines) + draw(st.sampled_from([eol, ""]))
    if draw(st.integers(0, 9)) == 0:
        text = "https://www.CryptoDataDownload.com" + eol + text
    data = text.encode("utf-8")
    if draw(st.integers(0, 9)) == 0:
        data = b"\xef\xbb\xbf" + data
    replaced = draw(st.integers(0, 19)) == 0
    if replaced:
        data = draw(
            st.sampled_from([text.encode("utf-16"), text.encode("latin-1", "replace"), draw(st.binary(max_size=200))])
        )
    checkable = not garbage and sep == "," and not duplicate and not replaced
    return data, rows, timeframe, tz, base, checkable


def check_a_file(case) -> None:
    data, rows, timeframe, tz, base, checkable = case
    with tempfile.TemporaryDirectory() as d:
        (path := Path(d) / "candles.csv").write_bytes(data)
        try:
            raw = read_candles_file(path, base=base, tz=tz)
        except MorningstarError:
            return  # refused as a whole, with the project's own error
    ok, report = check_candles(raw, timeframe)
    assert_invariants(ok, timeframe)
    assert_report(ok, report, len(raw))
    if checkable:
        assert len(raw) == len(rows)
        assert_nothing_invented(ok, rows)
    assert_store_round_trip(ok, timeframe)


@FAST
@given(csv_files())
def test_reading_candle_files(case):
    check_a_file(case)


@pytest.mark.slow
@pytest.mark.timeout(900)  # about 60 s of CPU; more wall time on a loaded machine
@SLOW
@given(csv_files())
def test_reading_candle_files_1000(case):
    check_a_file(case)


def test_clean_files_are_read_completely():
    """The other direction, on one plain file per timestamp form: every good row is kept, exactly."""
    for start, kind in [
        (start, kind) for start in ("2024-03-30", "2024-10-26") for kind in ("s", "ms", "us", "z", "offset", "naive")
    ]:
        times = pd.date_range(start, periods=72, freq="h", tz="UTC").as_unit("ns")  # over a switch in Berlin
        local = times.tz_convert("Europe/Berlin")
        text = {
            "s": times.asi8 // 10**9,
            "ms": times.asi8 // 10**6,
            "us": times.asi8 // 10**3,
            "z": times.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "offset": [t.isoformat() for t in local],
            "naive": local.tz_localize(None).astype(str),
        }[kind]
        csv = "timestamp,open,high,low,close,volume\n" + "".join(f"{t},1.5,2.25,0.75,1.25,10\n" for t in text)
        with tempfile.TemporaryDirectory() as d:
            (path := Path(d) / "c.csv").write_text(csv)
            if start == "2024-10-26" and kind == "naive":  # 02:00-03:00 local happens twice: refused, not guessed
                with pytest.raises(MorningstarError, match="daylight-saving switch"):
                    read_candles_file(path, tz="Europe/Berlin")
                continue
            ok, report = check_candles(read_candles_file(path, tz="Europe/Berlin"), "1h")
        assert list(ok.index) == list(times) and not len(report.rejected), (start, kind)


# ---- frames -----------------------------------------------------------------------------------------

GARBAGE_OBJECTS = [
    None,
    np.nan,
    True,
    np.bool_(False),
    1 + 2j,
    object(),
    b"\xff",
    b"abc",
    [1.0],
    {"a": 1},
    "abc",
    "",
    pd.NaT,
    pd.Timedelta(1),
    float("inf"),
    -1.0,
]


ONE_IN_8 = st.integers(0, 7)
COLUMN_KINDS = st.sampled_from(["float64", "float64", "float32", "int64", "nullable", "text", "objects"])


@st.composite
def frames(draw):
    timeframe = draw(st.sampled_from(TIMEFRAMES))
    n = draw(st.integers(0, 25))
    time_kind = draw(st.sampled_from(["aware", "naive", "epoch_int", "epoch_float", "nullable", "text", "objects"]))
    unit = draw(st.sampled_from(["s", "ms", "us", "ns"]))
    zone = draw(st.sampled_from(ZONES))
    times, meant = [], []
    for _ in range(n):
        t = draw(instants(timeframe, int(draw(ONE_IN_8) < 2)))
        if draw(ONE_IN_8) == 0 and time_kind in ("text", "objects", "nullable", "epoch_float"):
            cell = {
                "text": draw(garbage_times()),
                "objects": draw(st.sampled_from(GARBAGE_OBJECTS)),
                "nullable": pd.NA,
                "epoch_float": draw(st.sampled_from([np.nan, np.inf, -5.0, 1e30])),
            }[time_kind]
            times.append(cell), meant.append(None)
            continue
        times.append(t), meant.append(t)
    epoch = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 10**9}[unit]  # numbers are s/ms/µs by size, never ns
    if time_kind == "aware":
        col = pd.Series(pd.DatetimeIndex(times, dtype="datetime64[ns, UTC]").as_unit(unit).tz_convert(zone))
    elif time_kind == "naive":
        col = pd.Series(pd.DatetimeIndex(times, dtype="datetime64[ns, UTC]").tz_localize(None).as_unit(unit))
    elif time_kind == "epoch_int":
        col = pd.Series([t.value // epoch for t in times], dtype="int64")
    elif time_kind == "epoch_float":
        col = pd.Series([t.value / epoch if isinstance(t, pd.Timestamp) else t for t in times], dtype="float64")
    elif time_kind == "nullable":
        col = pd.Series([t.value // epoch if isinstance(t, pd.Timestamp) else t for t in times], dtype="Int64")
    elif time_kind == "text":
        col = pd.Series([draw(time_text(t, "UTC")) if isinstance(t, pd.Timestamp) else t for t in times], dtype=object)
    else:  # any mix of objects: Timestamps in any zone, epoch ints, ISO text, garbage
        col = pd.Series(
            [
                [t.tz_convert(zone), t.value // 10**6, t.isoformat()][draw(ONE_IN_8) % 3]
                if isinstance(t, pd.Timestamp)
                else t
                for t in times
            ],
            dtype=object,
        )
    if time_kind == "epoch_float" and unit == "us":  # floats are exact below 2**53 µs only: keep the meaning honest
        meant = [t if t is None or float(t.value // 1000) == t.value / 1000 else None for t in meant]

    data, values, spoiled = {"timestamp": col}, [list(draw(candle_values())) for _ in range(n)], set()
    for j, k in enumerate(BAR_COLUMNS):
        kind = draw(COLUMN_KINDS)
        xs = [v[j] for v in values]
        if kind == "float32":
            xs = [float(np.float32(x)) for x in xs]
            data[k] = pd.Series(xs, dtype="float32")
        elif kind in ("int64", "nullable"):
            xs = [float(max(1, round(x))) if k != "volume" else float(round(x)) for x in xs]
            data[k] = pd.Series([int(x) for x in xs], dtype=kind.replace("nullable", "Int64"))
        elif kind == "text":
            data[k] = pd.Series([repr(x) for x in xs], dtype=object)
        elif kind == "objects":
            data[k] = pd.Series([[x, np.float64(x), repr(x)][draw(ONE_IN_8) % 3] for x in xs], dtype=object)
        else:
            data[k] = pd.Series(xs, dtype="float64")
        for i, x in enumerate(xs):
            values[i][j] = x
        if kind in ("objects", "text", "float64") and n and draw(st.integers(0, 3)) == 0:  # spoil some cells
            i = draw(st.integers(0, n - 1))
            data[k] = data[k].astype(object)
            data[k].iloc[i] = draw(st.sampled_from(GARBAGE_OBJECTS + BAD_NUMBERS))
            spoiled.add(i)
    rows = [Row({}, t, None if i in spoiled else tuple(v)) for i, (t, v) in enumerate(zip(meant, values))]
    frame = pd.DataFrame(data)
    if index := draw(st.sampled_from([None, list(range(n))[::-1], [f"r{i}" for i in range(n)]])):
        frame.index = index
    if draw(st.integers(0, 4)) == 0:
        frame = frame.sample(frac=1.0, random_state=draw(st.integers(0, 99)))  # order is not data
    if draw(st.integers(0, 9)) == 0:
        frame = frame.assign(symbol="BTCUSDT", reason="not mine")  # extra columns pass
    return frame, rows, timeframe


def check_a_frame(case) -> None:
    frame, rows, timeframe = case
    ok, report = check_candles(frame, timeframe)
    assert_invariants(ok, timeframe)
    assert_report(ok, report, len(frame))
    assert_nothing_invented(ok, rows)
    assert_store_round_trip(ok, timeframe)


@FAST
@given(frames())
def test_validating_candle_frames(case):
    check_a_frame(case)


@pytest.mark.slow
@pytest.mark.timeout(900)
@SLOW
@given(frames())
def test_validating_candle_frames_1000(case):
    check_a_frame(case)
