"""Property tests: over random candle frames (flat stretches, zero volume, calm and wild markets) features are
finite."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from morningstar_trader.config import FeatureSettings
from morningstar_trader.features import DataPreparation, FeatureError
from morningstar_trader.types import Bars

PREP = DataPreparation(FeatureSettings(), "1h")


@st.composite
def candle_frames(draw):
    n = draw(st.integers(PREP.min_bars, PREP.min_bars + 300))
    seed = draw(st.integers(0, 2**32 - 1))
    flat_from, flat_len = draw(st.integers(0, n)), draw(st.integers(0, 400))  # a stretch where nothing trades
    vol = draw(st.sampled_from([0.0, 1e-4, 0.01, 0.08]))
    rng = np.random.default_rng(seed)
    r = rng.standard_t(3, n) * vol
    r[flat_from : flat_from + flat_len] = 0.0
    close = 100 * np.exp(np.clip(np.cumsum(r), -20, 20))
    open_ = np.r_[100.0, close[:-1]]
    wick = np.abs(rng.normal(0, vol, n))
    wick[flat_from : flat_from + flat_len] = 0.0
    volume = rng.lognormal(0, 1, n) * (rng.random(n) > draw(st.sampled_from([0.0, 0.5, 1.0])))
    volume[flat_from : flat_from + flat_len] = 0.0
    idx = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC", name="timestamp").as_unit("ns")
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * np.exp(wick),
            "low": np.minimum(open_, close) * np.exp(-wick),
            "close": close,
            "volume": volume,
        },
        index=idx,
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(candle_frames())
def test_features_are_finite_even_through_flat_and_silent_stretches(frame):
    out = PREP.frame(Bars("x", "BTC/USDT", "1h", frame))  # would raise FeatureError naming a non-finite value
    assert len(out) == len(frame) - PREP.warm_up
    assert np.isfinite(out.drop(columns=["segment", "carried"]).to_numpy()).all()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(candle_frames(), min_size=1, max_size=4), st.data())
def test_the_newest_windows_of_many_pairs_at_once_equal_transform_bit_for_bit(frames, data):
    """`latest` (what a cycle computes for every pair at once) against `transform` on each pair's own candles: equal
    bit for bit, with gaps (only the stretch after the last one counts) and the pairs too short after a gap refused."""
    prep = PREP.fit([PREP.frame(Bars("x", "A/USDT", "1h", frames[0]))])
    candles, bars = {}, {}
    for i, f in enumerate(frames):
        holes = data.draw(st.lists(st.integers(1, len(f) - 2), max_size=3, unique=True))  # missing candles
        f = f.drop(f.index[holes])
        pair = f"P{i}/USDT"
        bars[pair] = Bars("x", pair, "1h", f)
        candles[pair] = (f.index.asi8, f.to_numpy())
    got, why = prep.latest(candles)
    assert set(got.pairs) | set(why) == set(candles) and not set(got.pairs) & set(why)
    for i, pair in enumerate(got.pairs):
        full = prep.transform(bars[pair])
        assert full.times[-1] == bars[pair].end
        assert np.array_equal(got.technical[i], full.technical[-1]) and np.array_equal(got.context[i], full.context[-1])
    for pair in why:  # refused: the newest bar has no full window after the last gap
        assert "too little history" in why[pair]
        try:
            newest = prep.transform(bars[pair]).times[-1]
        except FeatureError:
            continue  # no window at all
        assert newest != bars[pair].end
