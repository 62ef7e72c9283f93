"""Property tests for config loading (issue 16): generated trees from the real schema and generated YAML text with
random overrides. Only the project's own errors escape; what is accepted round-trips; a secret-looking key is always
refused without its value; `mode: live` comes only from one explicit `mode: live` (or an explicit override).

The `slow` tier runs 1,000 cases per test; the fast variants (50 cases) are for working on the config module."""

from __future__ import annotations

import copy
import datetime as dt
import tempfile
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from morningstar_trader.config import INDICATOR_PARAMS, ConfigError, Settings, dump_config, load_config, parse_config
from morningstar_trader.types import MorningstarError

FAST = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SLOW = settings(FAST, max_examples=1_000)

DEFAULTS = Settings().model_dump(mode="json")
SECRET_WORDS = [
    "api_key",
    "apiKey",
    "secret",
    "Password",
    "passphrase",
    "token",
    "private_key",
    "credentials",
    "x_TOKEN_y",
]
FUNNY = [
    "live",
    "LIVE",
    " live",
    "live ",
    "paper",
    "backtest",
    "off",
    "yes",
    "on",
    "no",
    "null",
    "~",
    "~nosuchuser/x",
    "a\0b",
    "a\nb",
    "\x1b[31m",
    "\ud800",
    "..",
    ".",
    "1h",
    "0h",
    "9" * 30 + "h",
    "BTC/USDT",
    "btc/usdt",
    "BTC/USDT:USDT",
    "http://127.0.0.1:1",
    "localhost",
    "",
    " ",
    "1e300",
    ".inf",
    "x" * 5_000,
    "binance",
    "kraken",
    "signal",
    "rsi",
]
PRINTABLE = st.characters(min_codepoint=32, max_codepoint=0x2FF)
HUGE_DIGITS = [5000, 4000, 300, 20, 19]  # 10**5000 has too many digits for Python to print


def huge():
    # built on the fly: hypothesis cannot describe a strategy that holds 10**5000
    return st.tuples(st.sampled_from(HUGE_DIGITS), st.sampled_from([1, -1])).map(lambda t: t[1] * 10 ** t[0])


# strategies are built once: building them inside every draw cost most of the run time
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    huge(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(FUNNY),
    st.binary(max_size=4),
    st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31)),
)
KEYS = st.one_of(st.text(max_size=8), st.sampled_from(list(DEFAULTS)), st.integers(-3, 3), st.none())
JUNK = st.recursive(SCALARS, lambda ch: st.lists(ch, max_size=4) | st.dictionaries(KEYS, ch, max_size=4), max_leaves=12)
OTHER = st.one_of(st.sampled_from(FUNNY), st.floats(), st.integers(), JUNK)


def _bounded(field) -> st.SearchStrategy:
    """Values the field's own constraints allow: numbers in range, one of a Literal's options, its default otherwise."""
    ann, bounds = field.annotation, {}
    for m in field.metadata:
        for name in ("ge", "gt", "le", "lt"):
            if getattr(m, name, None) is not None:
                bounds[name] = getattr(m, name)
    lo, hi = bounds.get("ge", bounds.get("gt")), bounds.get("le", bounds.get("lt"))
    base = next(a for a in (get_args(ann) or (ann,)) if a is not type(None))
    if base is bool:
        out = st.booleans()
    elif get_origin(ann) is Literal:
        out = st.sampled_from(get_args(ann))
    elif base is int:
        out = st.integers(lo if lo is not None else -(10**6), hi if hi is not None else 10**7)
    elif base is float:
        out = st.floats(lo, hi if hi is not None else 1e12, exclude_min="gt" in bounds, exclude_max="lt" in bounds)
    else:
        out = st.just(field.get_default()).map(lambda v: str(v) if isinstance(v, Path) else v)
    return out | st.none() if type(None) in get_args(ann) else out


@st.composite
def indicator(draw):
    n = draw(st.sampled_from(list(INDICATOR_PARAMS) * 9 + FUNNY[:10]))
    want = INDICATOR_PARAMS.get(n, {"period": None})
    keys = (
        list(want)
        if draw(st.integers(0, 5))
        else draw(st.lists(st.sampled_from([*want, "length"]), max_size=3, unique=True))
    )

    def number(k):
        r = want.get(k)
        if r is not None and draw(st.integers(0, 3)):  # mostly in range
            return draw(st.integers(int(r.lo), int(r.hi)) if r.whole else st.floats(r.lo, r.hi))
        return draw(BAD_NUMBER)

    return {"name": n, "params": {k: number(k) for k in keys}}


BAD_NUMBER = st.one_of(st.integers(-5, 12_000), st.floats(), huge(), st.sampled_from([1.5, True, "14", None]))


def _valid(default, field) -> st.SearchStrategy:
    if isinstance(default, dict):
        return st.just(default)  # a nested section (e.g. alt.<source>): its default, as YAML has it
    if isinstance(default, list) and default and isinstance(default[0], dict):
        return st.lists(indicator(), max_size=4)
    if isinstance(default, list):
        return st.lists(st.sampled_from([*default, "ETH/USDT", "SOL/USDT"]), max_size=4, unique=True)
    return _bounded(field)


def _section(model) -> bool:
    return isinstance(model, type) and issubclass(model, BaseModel)


VALID = {
    name: (
        {k: _valid(DEFAULTS[name][k], f2) for k, f2 in f.annotation.model_fields.items()}
        if _section(f.annotation)
        else _valid(DEFAULTS[name], f)
    )
    for name, f in Settings.model_fields.items()
}


def near(draw, default, valid: st.SearchStrategy):
    """Mostly a value the setting allows, sometimes its default, sometimes anything at all."""
    i = draw(st.integers(0, 9))
    return default if i == 0 else draw(valid) if i < 8 else draw(OTHER)


@st.composite
def trees(draw):
    """A config tree drawn from the real schema: random sections, random real keys, now and then an unknown key."""
    tree = {}
    for section in draw(st.lists(st.sampled_from(list(DEFAULTS)), unique=True, max_size=8)):
        default, valid = DEFAULTS[section], VALID[section]
        if isinstance(valid, dict) and draw(st.integers(0, 19)) < 19:
            keys = draw(st.lists(st.sampled_from(list(default)), unique=True, max_size=5))
            tree[section] = {k: near(draw, default[k], valid[k]) for k in keys}
            if draw(st.integers(0, 19)) == 19:
                tree[section][draw(st.text(max_size=8))] = draw(SCALARS)
        else:
            tree[section] = near(draw, default, valid if not isinstance(valid, dict) else st.just(default))
    if draw(st.integers(0, 3)) == 3:
        tree["mode"] = "live"
    return copy.deepcopy(tree)  # defaults are shared: a test that plants a key must not plant it in DEFAULTS


def overrides():
    """Overrides as the CLI passes them: mostly valid or None (not given), sometimes not."""
    value = {
        "mode": st.sampled_from([None, None, None, "live", "paper", "backtest", "Live", True]),
        "pairs": st.sampled_from(
            [None, None, ["ETH/USDT"], ["BTC/USDT", "ETH/USDT"], ["btc/usdt"], ["BTC/USDT"] * 2, [], "BTC/USDT"]
        ),
        "timeframe": st.sampled_from([None, None, "1h", "15m", "4h", "7x", "", "9" * 30 + "h", 5]),
    }
    return st.lists(st.sampled_from(list(value)), unique=True, max_size=3).flatmap(
        lambda ks: st.fixed_dictionaries({k: value[k] for k in ks})
    )


def to_yaml(tree) -> str:
    return yaml.safe_dump(tree, allow_unicode=True, sort_keys=False)


@st.composite
def texts(draw):
    """YAML text of a generated tree, then edited the way a hurried hand or an attacker would."""
    try:
        lines = to_yaml(draw(trees())).splitlines()
    except ValueError:
        lines = ["training:", "  seed: " + "9" * 5_000]  # PyYAML cannot write 10**5000 either
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        at = draw(st.integers(0, len(lines)))
        edit = draw(
            st.sampled_from(["dup", "live", "indented_live", "alias", "merge", "drop", "tag", "deep", "quote", "junk"])
        )
        if edit == "dup" and lines:
            lines.insert(at, lines[draw(st.integers(0, len(lines) - 1))])
        elif edit == "live":
            lines.insert(
                at,
                draw(
                    st.sampled_from(
                        [
                            "mode: live",
                            "'mode': live",
                            'mode: "live"',
                            "mode: !!str live",
                            "? mode\n: live",
                            "mode: >-\n  live",
                            'mode: "l\\x69ve"',
                        ]
                    )
                ),
            )
        elif edit == "indented_live":
            lines.insert(at, "  mode: live")
        elif edit == "alias":
            lines += ["x: &m live", "mode: *m"]
        elif edit == "merge":
            lines += ["<<: {mode: live}"]
        elif edit == "drop" and lines:
            del lines[at - 1]
        elif edit == "tag":
            lines.insert(
                at,
                draw(
                    st.sampled_from(
                        [
                            "y: !!binary bGl2ZQ==",
                            "mode: !!binary bGl2ZQ==",
                            "z: !!set {a, b}",
                            "t: !!timestamp 2024-02-30",
                            "p: !!python/name:os.system",
                            "mode: !!bool yes",
                            "n: !!int 0x",
                        ]
                    )
                ),
            )
        elif edit == "deep":
            lines.insert(at, "d: " + "[" * draw(st.integers(10, 3_000)))
        elif edit == "quote":
            lines.insert(at, 's: "' + draw(st.text(max_size=6)).replace("\\", "") + '"')
        elif edit == "junk":
            lines.insert(at, draw(st.text(PRINTABLE, max_size=20) | st.text(max_size=20)))
    text = "\n".join(lines) + "\n"
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.sampled_from(["keep"] * 19 + ["corrupt"])) == "corrupt":  # a byte that is not UTF-8 (or a NUL)
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3(", b"\xe2\x82", b"\x80", b"\x00"])) + raw[at:]
    return raw


def load_bytes(raw: bytes, **ov) -> Settings:
    with tempfile.TemporaryDirectory() as d:
        (p := Path(d) / "c.yaml").write_bytes(raw)
        return load_config(p, **ov)


def round_trips(s: Settings) -> None:
    again = load_bytes(dump_config(s).encode())
    assert again == s, (s, again)


def explicit_single_live(raw: bytes) -> bool:
    """The document's top level has exactly one `mode` key, and its value is the plain scalar `live`."""
    root = yaml.compose(raw.decode(), Loader=yaml.SafeLoader)
    modes = [v for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == "mode"]
    return len(modes) == 1 and isinstance(modes[0], yaml.ScalarNode) and modes[0].value == "live"


# ---- the properties


def refused(e: MorningstarError) -> None:
    event("refused")  # `--hypothesis-show-statistics` shows how many cases got as far as being accepted


def check_tree(tree: dict) -> None:
    try:
        s = parse_config(tree, "tree")
    except MorningstarError as e:
        return refused(e)
    event(f"accepted, mode {s.mode}")
    round_trips(s)
    assert (s.mode == "live") == (tree.get("mode") == "live")


def check_secret(tree: dict, word: str, path: list[int], value) -> None:
    node, depth = tree, 1
    for step in path:  # walk down into existing mappings as far as `path` says, then plant the secret there
        subs = [v for v in node.values() if isinstance(v, dict)]
        if not subs:
            break
        node, depth = subs[step % len(subs)], depth + 1
    node[word] = value
    with pytest.raises(ConfigError) as e:
        parse_config(tree, "tree")
    assert "secrets are not allowed in config files" in str(e.value)
    if value in SECRET_VALUES:
        assert value not in str(e.value)


def check_text(raw: bytes, ov: dict) -> None:
    try:
        s = load_bytes(raw, **ov)
    except MorningstarError as e:
        return refused(e)
    event(f"accepted, mode {s.mode}")
    round_trips(s)
    if s.mode == "live":
        assert ov.get("mode") == "live" or (ov.get("mode") is None and explicit_single_live(raw)), raw[:500]


SECRET_VALUES = ["sk-FAKE-9f3b1c", "hunter2hunter2", "\x01sk-FAKE-ctrl"]  # distinctive: no setting's name or value
secret_value = st.one_of(st.sampled_from(SECRET_VALUES), SCALARS)
secret_args = (trees(), st.sampled_from(SECRET_WORDS), st.lists(st.integers(0, 5), max_size=4), secret_value)


@FAST
@given(trees())
def test_generated_trees_fast(tree):
    check_tree(tree)


@pytest.mark.slow
@SLOW
@given(trees())
def test_generated_trees_only_config_errors_escape_and_accepted_round_trips(tree):
    check_tree(tree)


@FAST
@given(*secret_args)
def test_secret_keys_fast(tree, word, path, value):
    check_secret(tree, word, path, value)


@pytest.mark.slow
@SLOW
@given(*secret_args)
def test_a_secret_looking_key_anywhere_is_always_refused_without_its_value(tree, word, path, value):
    check_secret(tree, word, path, value)


@FAST
@given(texts(), overrides())
def test_generated_yaml_fast(raw, ov):
    check_text(raw, ov)


@pytest.mark.slow
@SLOW
@given(texts(), overrides())
def test_generated_yaml_with_overrides_only_config_errors_escape_and_live_is_only_explicit(raw, ov):
    check_text(raw, ov)
