"""docs/PROMPTS_GUIDE.md and the supervisor's code are one source: the guide shows exactly what is sent."""
from __future__ import annotations

import json
import re

from conftest import ROOT
from morningstar_trader.supervisor import DIGEST_TEMPLATE, HEADLINES_TEMPLATE, PROMPT_VERSION, REVIEW_SCHEMA, SYSTEM_PROMPT, USER_TEMPLATE

GUIDE = (ROOT / "docs" / "PROMPTS_GUIDE.md").read_text()


def block(heading: str, lang: str, nth: int = 0) -> str:
    section = GUIDE[GUIDE.index(heading):]
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
        assert f"| `{field}` |" in GUIDE          # every field is explained in the table
