"""Properties of sizing (issue 11, item 7): the caps always hold, a higher predicted volatility never gives a larger
size, and a review never enlarges a trade nor loosens its levels.

The `slow` tier runs 1,000 cases per property; the fast variants (50 cases) are for working on the decision module."""

import math
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from morningstar_trader.config import DecisionSettings, RiskSettings
from morningstar_trader.decision import DecisionError, apply_review, decide, review_entry
from morningstar_trader.supervisor import NO_REVIEW
from morningstar_trader.types import TradeProposal

FAST = settings(
    max_examples=50, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
SLOW = settings(FAST, max_examples=1_000)

positive = st.floats(1e-6, 1e6, allow_nan=False)
vols = st.floats(1e-5, 0.05, allow_nan=False)
distances = st.floats(1e-5, 0.9, allow_nan=False)


@st.composite
def cases(draw):
    "A decision's inputs: predictions with every head, prices, equity and settings across their allowed ranges."
    lo = draw(st.floats(0.1, 10))
    decision = DecisionSettings(
        min_confidence=draw(st.floats(1 / 3, 1)),
        vol_target_bars=draw(st.integers(1, 1_000)),
        level_vols=(lo, draw(st.floats(lo + 0.01, 15))),
        regime_size=draw(st.one_of(st.none(), st.dictionaries(st.integers(0, 3), st.floats(0, 1)))),
    )
    risk = RiskSettings(
        risk_per_trade=draw(st.floats(1e-4, 0.1)),
        max_position_fraction=draw(st.floats(1e-3, 1)),
        max_position_notional=draw(st.one_of(st.none(), positive)),
    )
    pred = {
        "action": draw(st.sampled_from([-1, 1])),
        "confidence": draw(st.floats(decision.min_confidence, 1)),
        "volatility": draw(vols),
        "regime_id": draw(st.integers(0, 3)),
        "stop_loss": draw(distances),
        "take_profit": draw(distances),
    }
    return pred, draw(positive), draw(positive), decision, risk, draw(st.one_of(st.none(), positive))


def _decide(pred, price, equity, decision, risk, baseline=None, review=None):
    d = decide("X/Y", pred, price, equity, None, decision=decision, risk=risk, can_short=True, baseline_size=baseline)
    return d if review is None else review_entry(d, price, review, decision)


def caps_hold(case):
    pred, price, equity, decision, risk, baseline = case
    d = _decide(pred, price, equity, decision, risk, baseline)
    assert d.action in ("open_long", "open_short") or d.reasons[-1] == "size is zero", d.reasons
    slack = 1 + 1e-12
    assert d.size <= equity * risk.max_position_fraction / price * slack, d.reasons
    if risk.max_position_notional:
        assert d.size * price <= risk.max_position_notional * slack, d.reasons
    if baseline is not None:
        assert d.size <= baseline * slack, d.reasons
    assert d.size >= 0 and math.isfinite(d.size)


def higher_vol_never_larger(case, factor):
    pred, price, equity, decision, risk, baseline = case
    calm = _decide(pred, price, equity, decision, risk, baseline)
    try:
        wild = _decide({**pred, "volatility": pred["volatility"] * factor}, price, equity, decision, risk, baseline)
    except DecisionError as e:  # levels pushed to zero or below: no entry at all, which is never larger
        assert "at or below zero" in str(e)
        return
    assert wild.size <= calm.size * (1 + 1e-12), (calm.reasons, wild.reasons)


reviews = st.builds(
    lambda coherence, risk, mult, veto, source, failure, sl, tp: replace(
        NO_REVIEW,
        source=source,
        coherence=coherence,
        risk_score=risk,
        size_multiplier=mult,
        veto=veto,
        failure=failure,
        stop_loss=sl,
        take_profit=tp,
    ),
    st.sampled_from(["agree", "disagree", "uncertain"]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["llm", "replay", "simulated", "none"]),
    st.one_of(st.none(), st.just("timeout")),
    st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    st.one_of(st.none(), st.floats(allow_nan=True)),
)


def review_never_enlarges(case, review):
    pred, price, equity, decision, risk, baseline = case
    before = _decide(pred, price, equity, decision, risk, baseline)
    after = _decide(pred, price, equity, decision, risk, baseline, review=review)
    assert after.action in (before.action, "hold")
    if after.action == "hold":
        return
    assert after.size <= before.size
    sign = 1 if before.action == "open_long" else -1
    assert sign * (after.stop_loss - before.stop_loss) >= 0  # a stop only moves towards the price
    assert sign * (after.take_profit - before.take_profit) <= 0  # a target only moves nearer
    assert sign * (after.stop_loss - price) < 0 < sign * (after.take_profit - price)


@FAST
@given(cases())
def test_caps_hold_fast(case):
    caps_hold(case)


@pytest.mark.slow
@SLOW
@given(cases())
def test_caps_always_hold(case):
    caps_hold(case)


@FAST
@given(cases(), st.floats(1, 100))
def test_higher_vol_fast(case, factor):
    higher_vol_never_larger(case, factor)


@pytest.mark.slow
@SLOW
@given(cases(), st.floats(1, 100))
def test_higher_predicted_volatility_never_gives_a_larger_size(case, factor):
    higher_vol_never_larger(case, factor)


@FAST
@given(cases(), reviews)
def test_review_fast(case, review):
    review_never_enlarges(case, review)


@pytest.mark.slow
@SLOW
@given(cases(), reviews)
def test_a_review_never_enlarges_a_trade_nor_loosens_its_levels(case, review):
    review_never_enlarges(case, review)


def test_apply_review_keeps_the_proposal_on_a_neutral_review():
    p = TradeProposal("X/Y", "short", 2.0, 100.0, 103.0, 95.0)
    neutral = replace(NO_REVIEW, source="llm", coherence="agree", risk_score=0.1)
    assert apply_review(p, neutral, DecisionSettings()) == p
