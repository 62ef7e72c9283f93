"""Reviews of several pairs in parallel under one deadline (issue 26): a close with entries on three pairs asks their
live reviews at once through the real openai client against `tests/local_llm.py`; the answers, arriving in any order,
are applied in pair order, so the close decides and orders exactly as one asking them one by one; a review that misses
the close's deadline is an outage for its pair (llm.failure_policy skip_entry: no entry), the others trade. No timing
is asserted: the server counts the requests it holds at once."""

from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
import pytest
from local_llm import LocalLLM, Reply

from morningstar_trader.book import MemoryBook
from morningstar_trader.config import Settings
from morningstar_trader.execution import BarWindow, FillCosts, SimulatedVenue
from morningstar_trader.kernel import Kernel, PairInput, close_bar
from morningstar_trader.risk import RiskState
from morningstar_trader.supervisor import LlmClient, ReviewRecord, Supervisor

PAIRS = ("AA/USDT", "BB/USDT", "CC/USDT")
AGREE = json.dumps(
    {
        "coherence": "agree",
        "risk_score": 0.2,
        "veto": False,
        "direction": "long",
        "size_multiplier": 0.5,
        "stop_loss": None,
        "take_profit": None,
        "rationale": "fine",
    }
)
T0 = pd.Timestamp("2024-01-01", tz="UTC")
PRED = {"action": 1, "confidence": 0.8, "volatility": 0.01, "stop_loss": 0.02, "take_profit": 0.04}


def asked_pair(body) -> str:
    "The pair a review request is about (its user message names it)."
    return next(p for p in PAIRS if p in body["messages"][-1]["content"])


def one_close(llm: LocalLLM, tmp_path, name: str, **llm_settings):
    "A kernel whose reviewer is live against `llm`, one close with an entry proposed on each pair; (outcome, book)."
    s = Settings(
        pairs=PAIRS,
        decision={"min_confidence": 0.4},
        risk={"max_position_fraction": 0.2, "max_open_positions": 5},
        llm={"mode": "live", "base_url": llm.base_url, "model": "local-test", "max_retries": 0, **llm_settings},
    )
    supervisor = Supervisor(s.llm, ReviewRecord(tmp_path / f"{name}.sqlite"), LlmClient(s.llm, "sk-local-parallel"))
    book = MemoryBook(10_000.0)
    k = Kernel(s, book, SimulatedVenue(book, FillCosts(0.001, 0.001, 0.0), pd.Timedelta(hours=1)), "t", supervisor)
    price = {"AA/USDT": 100.0, "BB/USDT": 10.0, "CC/USDT": 1.0}
    inputs = {
        p: PairInput(BarWindow(np.array([T0.value]), np.array([[c, c * 1.01, c * 0.99, c]])), PRED)
        for p, c in price.items()
    }
    out = close_bar(k, inputs, T0 + pd.Timedelta(hours=1), RiskState.start(10_000.0, T0))
    return out, book


def decided(out, book) -> list:
    return [(r["pair"], r["action"], r["size"], r["order"]) for r in out.rows], book.orders()[
        "client_order_id"
    ].tolist()


@pytest.fixture
def llm():
    with LocalLLM(default=Reply(AGREE)) as server:
        yield server


def test_three_reviews_are_asked_at_once_and_applied_in_pair_order(llm, tmp_path):
    order = {"AA/USDT": 0.6, "BB/USDT": 0.4, "CC/USDT": 0.2}  # the answers arrive CC first, AA last
    all_asked = threading.Barrier(len(PAIRS))

    def after_all_asked(body):  # no answer before all three are asked, however slow the machine: not a timing bet
        all_asked.wait(timeout=30)
        return order[asked_pair(body)]

    llm.delay_by = after_all_asked
    out, book = one_close(llm, tmp_path, "parallel")
    assert llm.max_in_flight == 3 and len(llm.requests) == 3  # all three held by the server at once
    assert [r["pair"] for r in out.rows] == list(PAIRS) and {r["action"] for r in out.rows} == {"open_long"}
    assert list(out.notes.reviews) == list(PAIRS) and all(r.size_multiplier == 0.5 for r in out.notes.reviews.values())
    assert book.orders()["pair"].tolist() == list(PAIRS)  # sent in pair order, whatever order the answers came in
    assert all(r.latency_ms > 0 and r.prompt_hash for r in out.notes.reviews.values())

    one_by_one = LocalLLM(default=Reply(AGREE))
    with one_by_one:
        one_by_one.delay_by = lambda body: order[asked_pair(body)]
        seq = one_close(one_by_one, tmp_path, "sequential", max_parallel_reviews=1)
    assert one_by_one.max_in_flight == 1
    assert decided(*seq) == decided(out, book)  # the same rows, sizes and client order ids


def test_a_review_that_misses_the_close_deadline_is_an_outage_for_its_pair(llm, tmp_path):
    llm.delay_by = lambda body: 30.0 if asked_pair(body) == "BB/USDT" else 0.0  # cut short when the server stops
    out, book = one_close(llm, tmp_path, "deadline", review_deadline_s=1.0, timeout_s=60)
    rows = {r["pair"]: r for r in out.rows}
    assert rows["AA/USDT"]["order"] and rows["CC/USDT"]["order"] and not rows["BB/USDT"]["order"]
    bb = out.notes.reviews["BB/USDT"]
    assert "llm.review_deadline_s = 1 s" in bb.failure and bb.veto and bb.size_multiplier == 0.0
    assert out.notes.reviews["AA/USDT"].failure is None and out.notes.reviews["CC/USDT"].failure is None
    assert set(book.orders()["pair"]) == {"AA/USDT", "CC/USDT"}
    assert any("LLM review failed (skip_entry)" in a for a in out.notes.llm_alerts["BB/USDT"])
