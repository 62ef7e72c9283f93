"""Property tests (issue 16): no LLM reply can crash a review or make a trade riskier, and no reviewer can churn the
account.

1. Replies (random text, random JSON, schema-valid replies with wild values, huge numbers, deep nesting, NaN and
infinities, lone surrogates) on random proposals, through `Supervisor.review`: it never raises, never needs its
last-resort guard, and the reviewed trade is never larger, never flipped, its stop never wider, its target never on the
loss side, and a moved level never nearer the entry than the level rule allows.
2. Whole backtests with hostile reviewers against the same backtest without the LLM: every reviewed trade is one of the
unreviewed run's (same pair, side, entry bar and price), no larger and closed no later, so the number of trades, the
turnover, the fees and the largest exposure never exceed the unreviewed run's.

Each has a fast variant (every `pytest`) and a `slow` one.
"""

from __future__ import annotations

import atexit
import json
import math
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY, candles
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from morningstar_trader.backtest import ModelStrategy, run_kernel_backtest
from morningstar_trader.candles import validated_bars
from morningstar_trader.config import DecisionSettings, LlmSettings, Settings
from morningstar_trader.decision import apply_review
from morningstar_trader.model import MorningstarModel
from morningstar_trader.supervisor import (
    Completion,
    ReviewRecord,
    ReviewRequest,
    Supervisor,
    exit_size_factor,
    level_floor,
)
from morningstar_trader.training import train_model
from morningstar_trader.types import TradeProposal

HEALTH = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.function_scoped_fixture,
    HealthCheck.filter_too_much,
]
# thousands of recorded exchanges: in memory-backed /dev/shm where there is one (SQLite's fsync on disk dominates
# otherwise)
RECORD = (
    Path(tempfile.mkdtemp(prefix="llm-property-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    / "llm_record.sqlite"
)
atexit.register(shutil.rmtree, RECORD.parent, ignore_errors=True)
T0 = pd.Timestamp("2024-05-01 13:00", tz="UTC")


class Canned:
    "An LlmClient that answers whatever `answer(messages)` returns."

    def __init__(self, answer):
        self.answer = answer

    def complete(self, messages):
        return Completion(self.answer(messages), 1.0, 100, 40)


# --- 1. replies and the clamp ----------------------------------------------------------------------------------------

SURROGATES = st.characters(categories=["Cs"])
ANY_CHAR = st.one_of(st.characters(), SURROGATES)
wild_float = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, 5e-324, 1e308, -1e308]))
json_scalars = st.one_of(
    st.none(), st.booleans(), wild_float, st.integers(-(10**45), 10**45), st.text(ANY_CHAR, max_size=20)
)
json_values = st.recursive(
    json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=25
)


@st.composite
def proposals(draw):
    side = draw(st.sampled_from(["long", "short"]))
    sign = 1 if side == "long" else -1
    entry = draw(st.floats(1e-3, 1e6))
    d_sl, d_tp = draw(st.floats(1e-4, 0.5)), draw(st.floats(1e-4, 2.0 if side == "long" else 0.9))
    return TradeProposal(
        "X/USDT", side, draw(st.floats(1e-6, 1e6)), entry, entry * (1 - sign * d_sl), entry * (1 + sign * d_tp)
    )


def levels(entry: float):
    near = st.floats(-0.3, 0.3).map(lambda u: entry * (1 + u))
    return st.one_of(st.none(), near, wild_float, st.floats(0, 3 * entry), st.sampled_from([0.5, 50.0, 1e9, -1.0]))


@st.composite
def schema_replies(draw, entry: float) -> dict:
    "Replies that fit ReviewReply's types, with anything a hostile or broken model could put in them."
    reply = {
        "coherence": draw(st.sampled_from(["agree", "disagree", "uncertain"])),
        "risk_score": draw(st.floats(0, 1)),
        "veto": draw(st.booleans()),
        "direction": draw(st.sampled_from(["long", "short", "flat"])),
        "size_multiplier": draw(st.one_of(wild_float, st.floats(-1, 6))),
        "stop_loss": draw(levels(entry)),
        "take_profit": draw(levels(entry)),
        "rationale": draw(st.text(ANY_CHAR, max_size=700)),
        "alerts": draw(st.lists(st.text(ANY_CHAR, max_size=300), max_size=7)),
    }
    if draw(st.booleans()):
        reply |= draw(st.dictionaries(st.text(ANY_CHAR, max_size=10), json_values, max_size=3))
    return reply


def texts(entry: float):
    "Reply texts: every kind the issue lists."
    schema = st.tuples(schema_replies(entry), st.booleans()).map(lambda t: json.dumps(t[0], ensure_ascii=t[1]))
    wrapped = st.tuples(st.text(max_size=40), schema, st.text(max_size=40)).map(
        lambda t: f"{t[0]}```json\n{t[1]}\n```{t[2]}"
    )
    huge = st.tuples(
        st.sampled_from(["risk_score", "size_multiplier", "stop_loss"]),
        st.integers(30, 6_000),
        st.sampled_from(["", ".5", "e5", "}"]),
    ).map(lambda t: '{"%s": 1%s%s' % (t[0], "9" * t[1], t[2]))
    deep = st.tuples(st.sampled_from(['{"a":', "[", '{"alerts": [']), st.integers(2, 3_000)).map(
        lambda t: t[0] * t[1] + "{"
    )
    specials = schema_replies(entry).map(
        lambda d: json.dumps({**d, "size_multiplier": math.nan, "stop_loss": math.inf, "take_profit": -math.inf})
    )
    escapes = st.sampled_from(['{"rationale": "\\ud800", "alerts": ["\\udfff"]}', '"\\ud83d"']).flatmap(
        lambda tail: schema_replies(entry).map(lambda d: json.dumps(d)[:-1] + ', "x": ' + tail + "}")
    )
    big = st.tuples(schema, st.sampled_from([" ", "é", "9", "[", "\ud800"]), st.integers(5_000, 40_000)).map(
        lambda t: t[0] + t[1] * t[2]
    )
    return st.one_of(
        st.text(ANY_CHAR, max_size=300),
        json_values.map(json.dumps),
        schema,
        wrapped,
        huge,
        deep,
        specials,
        escapes,
        big,
    )


@st.composite
def cases(draw):
    prop = draw(proposals())
    s = LlmSettings(
        mode="live",
        min_stop_fraction=draw(st.floats(1e-4, 0.49)),
        failure_policy=draw(st.sampled_from(["skip_entry", "proceed_without_review", "reduce_size"])),
    )
    pred = {"confidence": 0.6}
    if (vol := draw(st.one_of(st.none(), st.floats(0, 1), st.just(math.nan)))) is not None:
        pred["volatility"] = vol
    fee, slip = draw(st.floats(0, 0.01)), draw(st.floats(0, 0.01))
    return prop, s, ReviewRequest(prop, T0, pred, {}, {}, fee=fee, slippage=slip), draw(texts(prop.entry_price))


def check_review(prop: TradeProposal, s: LlmSettings, request: ReviewRequest, text: str) -> None:
    review = Supervisor(s, ReviewRecord(RECORD), Canned(lambda messages: text)).review(request)
    assert not (review.failure or "").startswith("internal error"), (
        review.failure
    )  # the last-resort guard was not needed
    event("failed: " + review.failure.split(":")[0][:40] if review.failure else "clamped")
    assert 0 <= review.size_multiplier <= 1
    after = apply_review(prop, review, DecisionSettings())
    if after is None:
        return
    assert after.side == prop.side and after.pair == prop.pair and after.entry_price == prop.entry_price
    assert 0 < after.size <= prop.size and after.risk <= prop.risk * (1 + 1e-12)
    e, sign = prop.entry_price, (1 if prop.side == "long" else -1)
    vol = request.prediction.get("volatility")
    for name, out in (("stop_loss", -sign), ("take_profit", sign)):
        d, model = out * (getattr(after, name) - e), out * (getattr(prop, name) - e)
        assert 0 < d <= model, (name, after, prop)  # its own side of the entry, never wider or farther
        if d != model:
            floor = level_floor(name, prop, s, volatility=vol, fee=request.fee, slippage=request.slippage)
            assert d >= floor * e * (1 - 1e-9), (name, d / e, floor)
    g = exit_size_factor(prop, review.stop_loss, review.take_profit, request.slippage)
    assert after.size <= prop.size * g * (1 + 1e-12)  # a moved exit paid for in size


FAST = settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=HEALTH)
SLOW = settings(max_examples=1_500, deadline=None, derandomize=True, suppress_health_check=HEALTH)


@FAST
@given(cases())
def test_replies_fast(case):
    check_review(*case)


@pytest.mark.slow
@SLOW
@given(cases())
def test_no_reply_raises_or_makes_a_trade_riskier(case):
    check_review(*case)


# --- 2. whole backtests with hostile reviewers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Cached:
    "A model strategy whose inputs (heads and feature frames) were computed once."

    model: object
    cached: dict
    min_confidence: float
    name: str = "model"

    def inputs(self, pair, frame):
        return self.cached[pair]

    def predictions(self, pair, frame):
        return self.cached[pair][0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    "A tiny model trained once, and two synthetic data sets with its predictions."
    data = candles(1_800, end="2024-03-01", seed=3)
    train = {
        p: validated_bars(df.iloc[:1500].reset_index(names="timestamp"), "synthetic", p, "1h")[0]
        for p, df in data.items()
    }
    s = Settings(**TINY)
    model = MorningstarModel.load(
        train_model(s, train, tmp_path_factory.mktemp("m") / "tiny" / "v1", verbose=0).path, s
    )
    sets = []
    for seed in (3, 11):
        frames = {p: df for p, df in candles(800, end="2024-06-01", seed=seed).items()}
        strategy = ModelStrategy(model, s.decision.min_confidence)
        sets.append(
            (frames, Cached(model, {p: strategy.inputs(p, f) for p, f in frames.items()}, s.decision.min_confidence))
        )
    return sets


ISSUE_REPLY = {
    "coherence": "agree",
    "risk_score": 0.1,
    "veto": False,
    "direction": "long",
    "size_multiplier": 5,
    "stop_loss": 0.5,
    "take_profit": 50.0,
    "rationale": "",
    "alerts": [],
}


def proposal_in(messages) -> dict:
    user = messages[1]["content"]
    return json.loads(user[user.index("Proposal:") + len("Proposal:") : user.index("Model outputs")])


def reviewer_answer(kind: str, seed: int):
    "The reply function of one hostile reviewer; deterministic per proposal."

    def answer(messages):
        p = proposal_in(messages)
        sign, e = (1 if p["side"] == "long" else -1), p["entry_price"]
        if kind == "issue":
            return json.dumps(ISSUE_REPLY)
        if kind == "tightest":
            return json.dumps(
                {
                    **ISSUE_REPLY,
                    "direction": p["side"],
                    "size_multiplier": 1,
                    "stop_loss": e * (1 - sign * 1e-4),
                    "take_profit": e * (1 + sign * 1e-4),
                }
            )
        rnd = random.Random(f"{seed}|{p['pair']}|{p['decision_time']}")
        if kind == "garbage":
            return rnd.choice(["", "no", "{", '{"veto": 1}', '{"a":' * 500, "9" * 5000])
        level = lambda: rnd.choice(
            [None, e * (1 + rnd.uniform(-0.2, 0.2)), e * (1 + rnd.uniform(-0.01, 0.01)), 0.5, 50.0, 1e9]
        )
        return json.dumps(
            {
                **ISSUE_REPLY,
                "veto": rnd.random() < 0.2,
                "direction": rnd.choice(["long", "short", "flat", p["side"]]),
                "size_multiplier": rnd.choice([rnd.uniform(-1, 6), rnd.random(), 1.0, math.nan]),
                "stop_loss": level(),
                "take_profit": level(),
            }
        )

    return answer


_BASELINES: dict = {}


def run(frames, strategy, s: Settings, supervisor=None):
    return run_kernel_backtest(frames, strategy, s, supervisor=supervisor, cash=10_000)


def totals(res, frames) -> dict:
    "Number of trades, turnover (traded value), fees and the largest exposure (units held at a close x that close)."
    t = res.trades
    exposure = pd.Series(0.0, index=res.equity.index)
    for row in t.itertuples():
        close = frames[row.pair]["close"]
        held = close[(close.index >= row.entry_time) & (close.index < row.exit_time)]
        exposure = exposure.add(row.size * held, fill_value=0.0)
    return {
        "trades": len(t),
        "turnover": float((t["size"] * (t["entry_price"] + t["exit_price"])).sum()),
        "fees": float(t["fees"].sum()),
        "max_exposure": float(exposure.max()) if len(exposure) else 0.0,
    }


def check_backtest(world, data_set: int, kind: str, seed: int, changes: dict) -> None:
    frames, strategy = world[data_set]
    s = Settings(**TINY).model_copy(
        update={k: getattr(Settings(**TINY), k).model_copy(update=v) for k, v in changes.items()}
    )
    key = (data_set, json.dumps(changes, sort_keys=True))
    if key not in _BASELINES:
        _BASELINES[key] = run(frames, strategy, s)
    plain = _BASELINES[key]
    llm = LlmSettings(mode="live", failure_policy=changes.get("llm", {}).get("failure_policy", "skip_entry"))
    reviewed = run(frames, strategy, s, Supervisor(llm, ReviewRecord(RECORD), Canned(reviewer_answer(kind, seed))))
    twins = plain.trades.set_index(["pair", "entry_time"])
    for row in reviewed.trades.itertuples():  # each reviewed trade is one of the unreviewed run's
        twin = twins.loc[(row.pair, row.entry_time)]
        assert twin["side"] == row.side and twin["entry_price"] == pytest.approx(
            row.entry_price, rel=1e-12
        )  # a smaller size: ulps
        assert row.size <= twin["size"] * (1 + 1e-12) and row.exit_time <= twin["exit_time"]
    got, base = totals(reviewed, frames), totals(plain, frames)
    event(f"{kind}: {got['trades']} of {base['trades']} trades")
    for k in got:
        assert got[k] <= base[k] * (1 + 1e-9) + 1e-9, (k, got, base)


backtest_cases = dict(
    data_set=st.integers(0, 1),
    kind=st.sampled_from(["random", "issue", "tightest", "garbage"]),
    seed=st.integers(0, 10**6),
    changes=st.fixed_dictionaries(
        {
            "costs": st.fixed_dictionaries(
                {"slippage_bps": st.sampled_from([0.0, 2.0, 25.0]), "taker_fee": st.sampled_from([0.0005, 0.001])}
            ),
            "risk": st.fixed_dictionaries(
                {
                    "cooldown_bars": st.sampled_from([0, 3]),
                    "max_open_positions": st.sampled_from([1, 2]),
                    "risk_per_trade": st.sampled_from([0.01, 0.05]),
                }
            ),
            "llm": st.fixed_dictionaries(
                {"failure_policy": st.sampled_from(["skip_entry", "proceed_without_review", "reduce_size"])}
            ),
        }
    ),
)


@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=HEALTH)
@given(**backtest_cases)
def test_hostile_reviewers_fast(world, data_set, kind, seed, changes):
    check_backtest(world, data_set, kind, seed, changes)


@pytest.mark.slow
@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=HEALTH)
@given(**backtest_cases)
def test_no_reviewer_raises_trades_turnover_fees_or_exposure_over_the_run_without_it(
    world, data_set, kind, seed, changes
):
    check_backtest(world, data_set, kind, seed, changes)
