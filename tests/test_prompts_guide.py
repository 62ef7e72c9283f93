"""docs/PROMPTS_GUIDE.md and the supervisor's code are one source: the guide shows exactly what is sent."""

from __future__ import annotations

import json
import re

from conftest import ROOT

from morningstar_trader.config import DecisionSettings, LlmSettings
from morningstar_trader.decision import apply_review
from morningstar_trader.supervisor import (
    DIGEST_TEMPLATE,
    HEADLINES_TEMPLATE,
    PROMPT_VERSION,
    REVIEW_SCHEMA,
    SYSTEM_PROMPT,
    USER_TEMPLATE,
    clamp,
    parse_reply,
)
from morningstar_trader.types import TradeProposal

GUIDE = (ROOT / "docs" / "PROMPTS_GUIDE.md").read_text()


def block(heading: str, lang: str, nth: int = 0) -> str:
    section = GUIDE[GUIDE.index(heading) :]
    return re.findall(rf"```{lang}\n(.*?)```", section, re.S)[nth]


def test_the_guide_shows_the_code_prompts():
    assert block("## System prompt", "text") == SYSTEM_PROMPT + "\n"
    assert block("## User message", "text") == USER_TEMPLATE + "\n"
    assert block("## User message", "text", 1) == HEADLINES_TEMPLATE
    assert block("## User message", "text", 2) == DIGEST_TEMPLATE
    assert f"`{PROMPT_VERSION}`" in GUIDE


def test_the_guide_schema_is_the_code_schema():
    assert json.loads(block("## The answer", "json")) == REVIEW_SCHEMA
    for field in REVIEW_SCHEMA["properties"]:
        assert f"| `{field}` |" in GUIDE  # every field is explained in the table


def test_the_worked_examples_are_what_the_code_does():
    proposal = TradeProposal("BTC/USDT", "long", 0.5, 100.0, 95.0, 110.0)
    section = GUIDE[GUIDE.index("## Worked examples") : GUIDE.index("## Modes")]
    rows = re.findall(r"^\| `(\{.*\})` \| size ([\d.]+), stop ([\d.]+), target ([\d.]+)", section, re.M)
    assert len(rows) == 4
    for answer, size, stop, target in rows:
        after = apply_review(
            proposal, clamp(proposal, parse_reply(answer), LlmSettings(), source="llm"), DecisionSettings()
        )
        assert (round(after.size, 4), after.stop_loss, after.take_profit) == (
            float(size),
            float(stop),
            float(target),
        ), answer
