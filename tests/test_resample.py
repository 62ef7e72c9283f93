"""Coarser timeframes derived from stored finer candles (issue 25): `resample_bars` against an oracle on generated
candles with holes, and `morningstar data resample` end to end on the synthetic sample, through to features and a model
trained at 4h that refuses 1h candles.

Asserted for every generated case (`pytest -m slow` runs 1,000, the unmarked variant 100):
- every output candle is the aggregation of exactly the source candles that open in its bucket, all of them there
  (no output bucket holds a gap), and it keeps the candle rules;
- every complete source bucket is in the output: nothing is dropped without a missing candle;
- the report lists exactly the incomplete buckets between the first and the last, with their counts, and only the first
  (last) one can be blamed on the source starting (ending) inside it.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from conftest import Project, write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from morningstar_trader.artifact import ModelError, resolve_model_dir
from morningstar_trader.candles import (
    CandleError,
    ResampleError,
    check_bars,
    grid_anchor,
    resample_bars,
    resample_steps,
    step_name,
)
from morningstar_trader.config import load_config
from morningstar_trader.features import DataPreparation, FeatureError
from morningstar_trader.store import CandleStore, StoreError
from morningstar_trader.types import BAR_COLUMNS, Bars, parse_timeframe

FAST = settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=1_000, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
PAIRS = [("1m", 5), ("5m", 3), ("15m", 4), ("1h", 4), ("1h", 6), ("1h", 24), ("2h", 12), ("1h", 168), ("1d", 7)]
EPOCHS = (pd.Timestamp("2010-01-01", tz="UTC").value, pd.Timestamp("2035-01-01", tz="UTC").value)


# ---- resample_bars against an oracle --------------------------------------------------------------


@st.composite
def sources(draw, dyadic: bool = True) -> tuple[Bars, str]:
    """Valid source candles on their grid with random holes (single candles and runs) and a random start and length,
    and a target timeframe; dyadic values sum exactly in any order, so volumes compare exactly."""
    source, k = draw(st.sampled_from(PAIRS))
    step = parse_timeframe(source).value
    n = draw(st.integers(0, 1_500))
    first = draw(st.integers(*EPOCHS)) // step * step
    keep = np.ones(n, bool)
    for _ in range(draw(st.integers(0, 6))):
        at, length = draw(st.integers(0, max(n - 1, 0))), draw(st.sampled_from([1, 1, 2, k, 3 * k + 1]))
        keep[at : at + length] = False
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dyadic:
        o, c = rng.integers(8, 8_000_000, (2, n)) / 8
        up, down = rng.integers(0, 800, (2, n)) / 8
        v = rng.integers(0, 8_000_000, n) / 8
    else:
        o, c = rng.lognormal(3, 2, (2, n))
        up, down = rng.exponential(0.01, (2, n)) * o
        v = rng.lognormal(5, 3, n) * rng.integers(0, 2, n)
    low = np.minimum(o, c) - np.minimum(down, np.minimum(o, c) / 2)
    frame = pd.DataFrame(
        {"open": o, "high": np.maximum(o, c) + up, "low": low, "close": c, "volume": v},
        index=pd.DatetimeIndex((first + step * np.arange(n)).astype("datetime64[ns]"), name="timestamp").tz_localize(
            "UTC"
        ),
    )[keep]
    return Bars("x", "A/B", source, frame), step_name(pd.Timedelta(step * k))


def _check(bars: Bars, target: str, exact_volume: bool) -> None:
    step, to = (s.value for s in resample_steps(bars.timeframe, target))
    k = to // step
    out, rep = resample_bars(bars, target)
    check_bars(out)
    assert out.timeframe == target and (rep.rows_in, rep.rows_out) == (len(bars), len(out))
    src, ns = bars.frame[list(BAR_COLUMNS)].to_numpy(), bars.frame.index.asi8
    bucket = ns - (ns - grid_anchor(pd.Timedelta(to))) % to
    got = out.frame.index.asi8
    assert ((got - grid_anchor(pd.Timedelta(to))) % to == 0).all()
    for t, row in zip(got, out.frame.to_numpy()):
        lo, hi = np.searchsorted(ns, [t, t + to])  # the source candles that open in [t, t + to)
        part, times = src[lo:hi], ns[lo:hi]
        assert len(part) == k and (np.diff(times) == step).all() and times[0] == t  # whole: no gap inside
        assert (row[0], row[3]) == (part[0, 0], part[-1, 3])
        assert (row[1], row[2]) == (max(part[:, 1]), min(part[:, 2]))
        want = sum(part[:, 4].tolist())
        assert row[4] == want if exact_volume else row[4] == pytest.approx(want, rel=1e-12, abs=1e-300)
    starts, counts = np.unique(bucket, return_counts=True)
    assert set(starts[counts == k]) == set(got)  # every complete bucket kept
    if len(starts):
        span = np.arange((starts[-1] - starts[0]) // to + 1) * to + starts[0]
        have = dict(zip(starts, counts))
        lost = [t for t in span if have.get(t, 0) < k]
    else:
        lost = []
    d = rep.dropped
    assert d["start"].map(lambda t: t.value).tolist() == lost
    assert d["candles"].tolist() == [have.get(t, 0) for t in lost] and ((d["candles"] + d["missing"]) == k).all()
    assert len(out) + len(d) == len(lost) + len(got)
    for i, reason in enumerate(d["reason"]):
        if reason == "source starts inside it":
            assert lost[i] == starts[0] and ns[0] > starts[0]
        elif reason.startswith("source ends inside it"):
            assert lost[i] == starts[-1] and ns[-1] + step < starts[-1] + to
        else:
            assert reason == "gap in the source"


@FAST
@given(sources())
def test_every_output_candle_is_exactly_its_bucket_and_every_gap_is_reported(case):
    _check(*case, exact_volume=True)


@FAST
@given(sources(dyadic=False))
def test_any_float_candles(case):
    _check(*case, exact_volume=False)


@pytest.mark.slow
@SLOW
@given(sources())
def test_every_output_candle_is_exactly_its_bucket_1000_cases(case):
    _check(*case, exact_volume=True)


def _hourly(start: str, n: int) -> Bars:
    idx = pd.date_range(start, periods=n, freq="h", tz="UTC", name="timestamp").as_unit("ns")
    c = 100 + np.arange(n, dtype=np.float64)
    return Bars(
        "x", "A/B", "1h", pd.DataFrame({"open": c, "high": c + 1, "low": c - 1, "close": c, "volume": 1.0}, idx)
    )


def test_three_years_of_hours_keep_their_last_bucket():
    """Regression: the span of buckets was sized by np.arange, in float64, which lost the last of 6,000 4h buckets."""
    bars = _hourly("2021-04-04 20:00", 24_000)
    four, rep = resample_bars(bars, "4h")
    assert (len(four), len(rep.dropped)) == (6_000, 0) and four.end == bars.end - pd.Timedelta(hours=3)
    day, rep = resample_bars(bars, "1d")
    assert len(day) == 999 and rep.dropped["reason"].tolist() == [
        "source starts inside it",
        "source ends inside it (still forming or cut)",
    ]


def test_a_gap_drops_exactly_its_bucket_and_a_cut_last_bucket_is_dropped():
    bars = _hourly("2024-01-01", 14)  # 00:00 .. 13:00: 12:00 starts a bucket that is still forming
    holed = Bars("x", "A/B", "1h", bars.frame.drop(index=bars.frame.index[[6]]))
    four, rep = resample_bars(holed, "4h")
    assert list(four.frame.index.hour) == [0, 8]
    assert rep.dropped[["candles", "missing", "reason"]].values.tolist() == [
        [3, 1, "gap in the source"],
        [2, 2, "source ends inside it (still forming or cut)"],
    ]
    assert four.frame.loc["2024-01-01 08:00"].tolist() == [108, 112, 107, 111, 4]


def test_1h_to_1d_across_a_daylight_saving_switch_is_24_utc_hours_a_day():
    bars = _hourly("2024-10-25", 24 * 5)  # Europe and the US change clocks on 10-27 and 11-03: UTC does not
    day, rep = resample_bars(bars, "1d")
    assert [str(t) for t in day.frame.index] == [f"2024-10-{d} 00:00:00+00:00" for d in range(25, 30)]
    assert day.frame["volume"].tolist() == [24.0] * 5 and len(rep.dropped) == 0


@pytest.mark.parametrize(
    "target, message",
    [
        ("30m", "cannot resample 1h candles to 30m: it is finer than 1h"),
        ("1h", "cannot resample 1h candles to 1h: it is the same length"),
        ("150m", "cannot resample 1h candles to 150m: it is not a whole multiple of 1h"),
        ("1y", "timeframe '1y' is not valid"),
    ],
)
def test_a_bad_target_is_refused_naming_both_timeframes(target, message):
    with pytest.raises((ResampleError, ValueError), match=re.escape(message)):
        resample_bars(_hourly("2024-01-01", 8), target)


def test_bad_source_candles_are_refused_not_aggregated():
    bars = _hourly("2024-01-01", 8)
    bad = Bars("x", "A/B", "1h", bars.frame.assign(volume=[1, 1, -1, 1, 1, 1, 1, 1.0]))
    with pytest.raises(CandleError, match="1 bad candle rows in x A/B 1h .*negative volume"):
        resample_bars(bad, "4h")


# ---- the command end to end ---------------------------------------------------------------------

TRAIN_4H = """features:
  window: 12
  indicators:
    - {name: rsi, params: {period: 7}}
    - {name: natr, params: {period: 7}}
    - {name: log_return, params: {period: 1}}
model: {conv_filters: 4, rnn_units: 4, dense_units: 8}
training: {horizon: 6, regime_window: 12, atr_period: 7, train_bars: 300, val_bars: 80, test_bars: 100, folds: 1,
           epochs: 1, batch_size: 128}
paths: {models_dir: models}
"""


@pytest.fixture(scope="module")
def resampled(tmp_path_factory) -> Project:
    """The sample set (BTC/USDT and ETH/USDT, 120 days of 1h from 02:00, so the first and last 4h and 1d buckets are
    cut) resampled to 4h and 1d through the installed script; a 4h config next to the 1h one."""
    root = tmp_path_factory.mktemp("resampled")
    project = Project(root, write_config(root, "http://127.0.0.1:9", extra=TRAIN_4H))
    four = root / "config-4h.yaml"
    four.write_text(project.config.read_text().replace("timeframe: 1h", "timeframe: 4h"))
    project.four = Project(root, four)
    project.run("data", "sample", "--days", "120", "--pairs", "BTC/USDT", "ETH/USDT", "--start", "2023-01-01T02:00")
    project.output = project.run(
        "data", "resample", "--from", "1h", "--to", "4h", "1d", "--exchange", "synthetic"
    ).stdout
    return project


def test_resample_prints_per_pair_rows_and_dropped_buckets(resampled):
    lines = resampled.output.splitlines()
    assert len(lines) == 4, resampled.output  # two pairs, two targets
    for pair in ("BTC/USDT", "ETH/USDT"):
        four = next(line for line in lines if line.startswith(f"synthetic {pair} 1h -> 4h: "))
        assert "+719 new, 0 changed, 719 stored in" in four and "2880 1h candles -> 719 4h, 2 buckets dropped" in four
        assert "source starts inside it: 1, source ends inside it (still forming or cut): 1" in four
        assert "first: 2023-01-01 00:00 (2/4), 2023-05-01 00:00 (2/4)" in four
        day = next(line for line in lines if line.startswith(f"synthetic {pair} 1h -> 1d: "))
        assert "+119 new, 0 changed, 119 stored" in day and "(22/24), 2023-05-01 00:00 (2/24)" in day


def test_resample_again_changes_nothing_and_show_lists_the_derived_series(resampled):
    store = CandleStore(resampled.data_dir)
    path = store.path("synthetic", "BTC/USDT", "4h")
    before = path.read_bytes(), path.stat().st_mtime_ns
    out = resampled.run("data", "resample", "--from", "1h", "--to", "4h", "--exchange", "synthetic").stdout
    assert out.count("+0 new, 0 changed, 719 stored") == 2, out
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    show = resampled.run("data", "show").stdout
    rows = [line.split() for line in show.splitlines()[1:7]]
    assert [r[:5] for r in rows[:3]] == [
        ["synthetic", "BTC/USDT", "1d", "synthetic", "119"],
        ["synthetic", "BTC/USDT", "1h", "synthetic", "2880"],
        ["synthetic", "BTC/USDT", "4h", "synthetic", "719"],
    ], show
    assert rows[0][-1] == "1h" and rows[2][-1] == "1h" and "6 series" in show


def test_the_4h_candles_load_and_make_features(resampled, monkeypatch):
    monkeypatch.chdir(resampled.root)
    cfg = load_config(resampled.four.config)
    hourly = CandleStore(resampled.data_dir).load("synthetic", "ETH/USDT", "1h")
    bars = CandleStore(resampled.data_dir).load("synthetic", "ETH/USDT", "4h", start="2023-02-01")
    assert bars.timeframe == "4h" and bars.start == pd.Timestamp("2023-02-01", tz="UTC") and len(bars) == 534
    first = hourly.frame.loc["2023-02-01 00:00":"2023-02-01 03:00"]
    assert bars.frame.iloc[0].tolist() == [
        first["open"].iloc[0],
        first["high"].max(),
        first["low"].min(),
        first["close"].iloc[-1],
        first["volume"].sum(),
    ]
    prep = DataPreparation(cfg.features, "4h")
    frame = prep.frame(bars)
    assert len(frame) == len(bars) - prep.warm_up and frame["segment"].nunique() == 1
    feats = prep.fit([frame]).transform(bars)
    assert feats.times[-1] == bars.end and np.isfinite(feats.technical).all()
    with pytest.raises(FeatureError, match="bars are 1h, features expect 4h"):
        prep.frame(hourly)


def test_a_pair_without_source_candles_or_a_bad_target_writes_nothing(resampled):
    before = sorted(p.name for p in resampled.data_dir.rglob("*.parquet"))
    proc = resampled.run(
        "data",
        "resample",
        "--from",
        "1h",
        "--to",
        "4h",
        "--exchange",
        "synthetic",
        "--pairs",
        "BTC/USDT",
        "XRP/USDT",
        check=1,
    )
    assert "no 1h candles stored for synthetic XRP/USDT" in proc.stderr and "stored at 1h: BTC/USDT, ETH/USDT" in (
        proc.stderr
    )
    proc = resampled.run("data", "resample", "--from", "4h", "--to", "6h", "--exchange", "synthetic", check=2)
    assert proc.stderr.strip() == (
        "morningstar: error: cannot resample 4h candles to 6h: it is not a whole multiple of 4h: a 6h candle would "
        "cut a 4h candle in two"
    )
    assert sorted(p.name for p in resampled.data_dir.rglob("*.parquet")) == before


def test_downloaded_candles_never_merge_into_derived_ones(resampled):
    store = CandleStore(resampled.data_dir)
    four = store.load("synthetic", "ETH/USDT", "4h")
    with pytest.raises(StoreError, match="4h candles derived from 1h"):
        store.save(four, "synthetic")


@pytest.mark.slow  # ~25 s on 2 busy cores: TensorFlow's import and a one-epoch training in a fresh process
def test_train_at_4h_then_the_model_refuses_1h_candles(resampled, monkeypatch):
    proc = resampled.four.run("train", "--exchange", "synthetic", "--quiet", timeout=300)
    assert "model written to" in proc.stdout, proc.stdout + proc.stderr
    # TensorFlow: imported by the one test that needs it, not by collecting this module
    from morningstar_trader.model import MorningstarModel  # noqa: PLC0415

    monkeypatch.chdir(resampled.root)
    path = resolve_model_dir(resampled.root / "models", "default")
    assert json.loads((path / "metadata.json").read_text())["features"]["timeframe"] == "4h"
    model = MorningstarModel.load(path, load_config(resampled.four.config))
    four = CandleStore(resampled.data_dir).load("synthetic", "BTC/USDT", "4h")
    pred = model.predict(model.prep.transform(four))
    assert pred["action"].shape == (len(four) - model.prep.min_bars + 1,)
    hourly = CandleStore(resampled.data_dir).load("synthetic", "BTC/USDT", "1h")
    with pytest.raises(FeatureError, match="bars are 1h, features expect 4h"):
        model.prep.transform(hourly)
    with pytest.raises(ModelError, match=r"features differ from the settings in \['timeframe'\]"):
        MorningstarModel.load(path, load_config(resampled.config))  # the 1h config
