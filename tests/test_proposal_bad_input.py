"""Bad input at the review (issue 26): a proposal with a stop or target at or below zero is refused where it is built
(fuzzing had `clamp` give a multiplier of -0.49 for a short whose target was -200), and whatever a reply says, the
review's size multiplier stays in [0, 1], for any proposal with levels above zero, however close to zero."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_llm_property import schema_replies

from morningstar_trader.config import LlmSettings
from morningstar_trader.supervisor import ReviewReply, clamp
from morningstar_trader.types import TradeProposal


@pytest.mark.parametrize(
    "side, stop, target", [("short", 120.0, -200.0), ("short", 110.0, 0.0), ("long", 0.0, 120.0), ("long", -5.0, 130.0)]
)
def test_a_proposal_with_a_level_at_or_below_zero_is_refused_where_it_is_built(side, stop, target):
    with pytest.raises(ValueError, match="a level at or below zero"):
        TradeProposal("X/USDT", side, 1.0, 100.0, stop, target)


@st.composite
def near_zero_shorts(draw):
    "Shorts and longs whose target (or stop) sits anywhere above zero, down to a hair above it."
    side = draw(st.sampled_from(["long", "short"]))
    entry = draw(st.floats(1e-3, 1e6))
    if side == "short":
        return TradeProposal(
            "X/USDT", side, 1.0, entry, entry * draw(st.floats(1.0001, 3)), entry * draw(st.floats(1e-9, 0.9999))
        )
    return TradeProposal(
        "X/USDT", side, 1.0, entry, entry * draw(st.floats(1e-9, 0.9999)), entry * draw(st.floats(1.0001, 5))
    )


@settings(max_examples=150, deadline=None, derandomize=True)
@given(near_zero_shorts().flatmap(lambda p: st.tuples(st.just(p), schema_replies(p.entry_price))), st.floats(0, 0.05))
def test_a_reviews_size_multiplier_stays_in_zero_to_one(case, slippage):
    prop, raw = case
    try:
        reply = ReviewReply.model_validate(raw)
    except ValueError:
        return  # refused by the schema: the failure policy's review, already in [0, 1]
    review = clamp(prop, reply, LlmSettings(mode="live"), volatility=0.01, fee=0.001, slippage=slippage, source="live")
    assert 0 <= review.size_multiplier <= 1, (prop, reply, review.size_multiplier)
