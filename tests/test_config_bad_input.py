"""Issue 16, config: every listed bad input stops at load with a ConfigError naming the input, the value and what is
allowed, and through the real `morningstar` command with one `morningstar: error:` line and exit status 2."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import Project

from morningstar_trader.config import (
    INDICATOR_PARAMS,
    ConfigError,
    FeatureSettings,
    IndicatorSpec,
    Settings,
    dump_config,
    load_config,
    parse_config,
)
from morningstar_trader.features import INDICATORS, DataPreparation


def write(tmp_path: Path, text: str | bytes) -> Path:
    p = tmp_path / "config.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def refused(tmp_path: Path, text: str | bytes, *contains: str, **overrides) -> str:
    """Load `text` as a config; it must raise ConfigError whose message holds each of `contains`."""
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text), **overrides)
    for part in contains:
        assert part in str(e.value), f"{part!r} not in {str(e.value)!r}"
    return str(e.value)


def cli_refuses(tmp_path: Path, text: str | bytes, *contains: str, args: tuple = ()) -> str:
    """The real command exits 2 with one `morningstar: error:` line (no traceback) holding each of `contains`."""
    proc = Project(tmp_path, write(tmp_path, text)).run("data", "show", *args, check=2)
    assert proc.stderr.startswith("morningstar: error: ") and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for part in contains:
        assert part in proc.stderr, proc.stderr
    return proc.stderr


# ---- the repros listed in issue 16


def test_non_utf8_bytes_in_the_config_are_a_config_error(tmp_path):
    refused(
        tmp_path,
        b"mode: backtest\ntimeframe: 1h\nllm: {model: caf\xe9}\n",
        "not UTF-8 text: byte 0xe9 at line 3",
        "save the file as UTF-8",
    )


def test_non_utf8_bytes_through_the_cli_exit_2_not_1(tmp_path):
    cli_refuses(tmp_path, b"mode: \xff\xfe\n", "not UTF-8 text: byte 0xff at line 1")


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 50_000 + "]" * 50_000,
        "features: " + "{a: " * 5_000 + "1" + "}" * 5_000,
        "risk:\n" + "".join("  " * d + f"k{d}:\n" for d in range(1, 400)),
    ],
)
def test_deeply_nested_yaml_is_refused_not_a_recursion_error(tmp_path, text):
    refused(tmp_path, text, "nested deeper than 16 levels; no setting is deeper than 5")


def test_deeply_nested_yaml_through_the_cli(tmp_path):
    cli_refuses(tmp_path, "risk: " + "[" * 100_000, "line 1, column", "nested deeper than 16 levels")


def test_deeply_nested_dict_given_to_parse_config_is_refused():
    deep = d = {}
    for _ in range(100_000):
        d = d.setdefault("risk", {})
    with pytest.raises(ConfigError, match="nested deeper than 16 levels"):
        parse_config(deep, "tree")


@pytest.mark.parametrize("text,kind", [("- a\n- b\n", "list"), ("hello\n", "str"), ("42\n", "int"), ("[]\n", "list")])
def test_a_list_or_scalar_document_with_overrides_is_refused_not_a_type_error(tmp_path, text, kind):
    refused(tmp_path, text, f"the top level must be a mapping of keys, got {kind}", mode="paper", pairs=["ETH/USDT"])


def test_a_list_document_with_cli_overrides(tmp_path):
    # `data import` overrides pairs and timeframe
    proc = Project(tmp_path, write(tmp_path, "- a\n")).run(
        "data",
        "import",
        str(tmp_path / "x.csv"),
        "--exchange",
        "binance",
        "--pair",
        "BTC/USDT",
        "--timeframe",
        "1h",
        check=2,
    )
    assert (
        proc.stderr.strip().endswith("the top level must be a mapping of keys, got list")
        and "Traceback" not in proc.stderr
    )


@pytest.mark.parametrize("key", ["data_dir", "models_dir", "logs_dir"])
def test_nul_in_a_path_setting_is_refused(tmp_path, key):
    refused(tmp_path, f'paths:\n  {key}: "data\\0x"\n', f"paths.{key}: control character '\\x00'")


def test_nul_in_a_path_given_in_code_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="a path must not contain a NUL byte"):
        parse_config({"paths": {"state_dir": Path("st\0ate")}}, "tree")  # not text: the tree check lets a Path through


def test_nul_in_an_alt_data_path_is_refused(tmp_path):
    refused(
        tmp_path,
        'features:\n  alt_data: [{name: news, path: "a\\0b.csv", columns: [s]}]\n',
        "features.alt_data[0].path: control character",
    )


def test_unknown_user_home_in_a_path_setting_is_refused(tmp_path):
    refused(
        tmp_path,
        "paths:\n  data_dir: ~nosuchuser_ms/data\n",
        "paths.data_dir: '~nosuchuser_ms' names no home directory on this machine",
        "(got '~nosuchuser_ms/data')",
    )


def test_unknown_user_home_in_an_alt_data_path_is_refused(tmp_path):
    refused(
        tmp_path,
        "features:\n  alt_data: [{name: news, path: ~nosuchuser_ms/n.csv, columns: [s]}]\n",
        "features.alt_data.0.path: '~nosuchuser_ms' names no home directory",
    )


def test_unknown_user_home_in_a_path_through_the_cli(tmp_path):
    # the multi-line "invalid config" form: the first line is the error line, no traceback
    proc = Project(tmp_path, write(tmp_path, "paths:\n  logs_dir: ~nosuchuser_ms\n")).run("data", "show", check=2)
    assert proc.stderr.startswith("morningstar: error: ") and "Traceback" not in proc.stderr
    assert "paths.logs_dir: '~nosuchuser_ms' names no home directory" in proc.stderr


def test_unknown_user_home_in_data_dir_argument_through_the_cli(tmp_path):
    cli_refuses(
        tmp_path,
        "mode: backtest\n",
        "--data-dir: '~nosuchuser_ms' names no home directory",
        args=("--data-dir", "~nosuchuser_ms/data"),
    )


def test_an_empty_indicator_list_is_refused_at_load(tmp_path):
    refused(
        tmp_path,
        "features:\n  indicators: []\n",
        "features.indicators: at least one indicator is needed (got none)",
        "allowed names: log_return, rsi",
    )


@pytest.mark.parametrize(
    "value,message",
    [
        (".inf", "features.indicators.0.params.period: must be a finite number (got inf)"),
        ("-.inf", "must be a finite number (got -inf)"),
        (".nan", "must be a finite number (got nan)"),
        ("1.0e+300", "features.indicators: [0] 'rsi': period must be an integer from 2 to 10000 (got 1000000000"),
        ("99999999999999999999999", "period must be an integer from 2 to 10000 (got 99999999999999999999999)"),
        ("10001", "period must be an integer from 2 to 10000 (got 10001)"),
        ("14.5", "period must be an integer from 2 to 10000 (got 14.5)"),
        ("0", "period must be an integer from 2 to 10000 (got 0)"),
        ("1", "period must be an integer from 2 to 10000 (got 1)"),
        ("true", "must be a number, e.g. 14 (got True)"),
        ("fast", "must be a number, e.g. 14 (got 'fast')"),
    ],
)
def test_an_infinite_huge_nan_or_out_of_range_indicator_period_is_refused_at_load(tmp_path, value, message):
    refused(tmp_path, f"features:\n  indicators:\n    - {{name: rsi, params: {{period: {value}}}}}\n", message)


def test_every_indicator_parameter_has_a_range_and_is_checked(tmp_path):
    for name, params in INDICATOR_PARAMS.items():
        for p, r in params.items():
            bad = {**{k: (v.lo + v.hi) // 2 for k, v in params.items()}, p: r.hi * 2}
            with pytest.raises(ConfigError, match=f"'{name}': {p} must be"):
                parse_config({"features": {"indicators": [{"name": name, "params": bad}]}}, "tree")


def test_macd_fast_not_below_slow_is_refused(tmp_path):
    # TA-Lib swaps them silently, and the declared warm-up (from `slow`) would then be too short
    refused(
        tmp_path,
        "features:\n  indicators: [{name: macd, params: {fast: 30, slow: 26, signal: 9}}]\n",
        "[0] 'macd': fast must be below slow (got fast 30, slow 26)",
    )


def test_a_duplicate_mode_live_is_refused_not_last_one_wins(tmp_path):
    refused(
        tmp_path,
        "mode: backtest\npairs: [BTC/USDT]\nmode: live\n",
        "line 3, column 1: duplicate key 'mode' (first at line 1); each key may appear once",
    )


@pytest.mark.parametrize(
    "text,key,line",
    [
        ("risk:\n  max_drawdown: 0.1\n  max_drawdown: 0.9\n", "max_drawdown", 3),
        ("features:\n  indicators:\n    - name: rsi\n      params: {period: 14, period: 2}\n", "period", 4),
        ("llm: {mode: off, mode: live}\n", "mode", 1),
        ("mode: paper\n'mode': live\n", "mode", 2),
        ('exchange: {id: binance}\n"exchange": {sandbox: true}\n', "exchange", 2),
    ],
)
def test_duplicate_keys_are_refused_at_any_depth_naming_the_key_and_line(tmp_path, text, key, line):
    refused(tmp_path, text, f"line {line}, column", f"duplicate key '{key}'")


def test_a_duplicate_mode_live_through_the_cli(tmp_path):
    cli_refuses(tmp_path, "mode: paper\nmode: live\n", "line 2, column 1: duplicate key 'mode' (first at line 1)")


# ---- failure classes found while fuzzing and reviewing


def test_an_integer_too_long_for_python_is_a_config_error(tmp_path):
    # PyYAML's int() raised a bare ValueError ("Exceeds the limit (4300 digits)")
    refused(tmp_path, "training:\n  seed: " + "9" * 5_000 + "\n", "line 2, column 9: cannot read this int value")


def test_an_impossible_date_is_a_config_error(tmp_path):
    # PyYAML's timestamp constructor raised a bare ValueError
    refused(tmp_path, "risk:\n  since: 2024-02-30\n", "cannot read this timestamp value: day is out of range for month")


def test_a_date_value_is_refused_by_type_not_by_pydantic(tmp_path):
    refused(tmp_path, "timeframe: 2024-01-01\n", "timeframe: a date is not a setting", "quote it to make it text")


def test_aliases_and_merge_keys_are_refused(tmp_path):
    refused(tmp_path, "x: &live live\nmode: *live\n", "line 2, column 7: aliases (*name) are not allowed")
    refused(tmp_path, "base: &b {mode: live}\n<<: *b\n", "aliases (*name) are not allowed")
    refused(tmp_path, "<<: {mode: live}\n", "merge keys (<<) are not allowed")


def test_a_billion_laughs_document_is_refused_at_once(tmp_path):
    text = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi")
    )
    refused(tmp_path, text, "aliases (*name) are not allowed")


def test_mode_off_means_off_as_documented(tmp_path):
    # YAML 1.1 read `off` as False: the documented `llm.mode: off` was refused with "(got False)"
    assert load_config(write(tmp_path, "llm:\n  mode: off\nexchange:\n  sandbox: yes\n")).llm.mode == "off"
    assert load_config(write(tmp_path, "exchange:\n  sandbox: on\n")).exchange.sandbox is True


def test_secret_keys_are_refused_without_their_value_whatever_else_is_wrong(tmp_path):
    msg = refused(
        tmp_path,
        'risk: {max_drawdown: "\\x01"}\nexchange:\n  apiKey: "k-\\x01SEKRIT"\n',
        "exchange.apiKey: secrets are not allowed in config files",
    )
    assert "SEKRIT" not in msg


def test_non_text_keys_are_refused(tmp_path):
    refused(tmp_path, "1: x\n", "<1>: keys must be text (got a int key)")
    refused(tmp_path, "risk: {null: 0.1}\n", "risk.<None>: keys must be text")


def test_a_config_file_too_big_is_refused_before_parsing(tmp_path):
    refused(tmp_path, "# " + "x" * 1_100_000 + "\n", "larger than 1,000,000 bytes")


def test_control_characters_in_any_text_are_refused(tmp_path):
    refused(tmp_path, 'llm: {model: "gpt\\x1b[31m"}\n', "llm.model: control character '\\x1b'")


def test_a_lone_surrogate_or_c1_control_in_text_is_refused(tmp_path):
    # a YAML escape can make a lone surrogate, which no UTF-8 log line or request can carry
    refused(tmp_path, 'llm: {model: "gpt\\ud800"}\n', "llm.model: a lone surrogate '\\ud800' in text")
    refused(tmp_path, 'llm: {model: "gpt\\x9b2J"}\n', "llm.model: control character '\\x9b'")


def test_model_name_of_dots_is_refused(tmp_path):
    # models_dir / name would leave paths.models_dir
    refused(tmp_path, "model: {name: ..}\n", "model.name: must not be only dots")
    refused(tmp_path, "model: {version: .}\n", "model.version: must not be only dots")


@pytest.mark.parametrize(
    "text,part",
    [
        ("llm: {timeout_s: .inf}\n", "llm.timeout_s: Input should be a finite number"),
        ("risk: {max_position_notional: .inf}\n", "risk.max_position_notional: Input should be a finite"),
        ("llm: {input_cost_per_million: .nan}\n", "llm.input_cost_per_million: Input should be a finite"),
        ("training: {seed: -1}\n", "training.seed: Input should be greater than or equal to 0"),
        ("training: {train_bars: 100000000000}\n", "training.train_bars: Input should be less than"),
        ("llm: {base_url: localhost:11434}\n", "llm.base_url: must be an http:// or https:// URL"),
    ],
)
def test_unbounded_numbers_and_urls_are_refused(tmp_path, text, part):
    refused(tmp_path, text, part)


def test_a_timeframe_too_long_for_a_timedelta_is_a_config_error(tmp_path):
    refused(tmp_path, "timeframe: " + "9" * 40 + "h\n", "timeframe")


def test_an_unknown_key_inside_a_list_of_sections_lists_the_allowed_keys(tmp_path):
    refused(
        tmp_path,
        "features:\n  indicators: [{name: rsi, params: {period: 14}, period: 3}]\n",
        "features.indicators.0.period: unknown key; allowed here: name, params",
    )


def test_a_huge_value_is_shown_cut_short(tmp_path):
    msg = refused(tmp_path, "timeframe: " + "x" * 100_000 + "\n", "timeframe")
    assert len(msg) < 600


# ---- what is accepted is usable


def test_indicator_ranges_match_the_features_module():
    assert {n: set(p) for n, p in INDICATOR_PARAMS.items()} == {n: set(i.params) for n, i in INDICATORS.items()}


@pytest.mark.parametrize("name", sorted(INDICATOR_PARAMS))
def test_every_accepted_extreme_parameter_computes(name):
    """At both ends of every range the indicator computes and its warm-up is a whole number of bars."""
    rng = np.random.default_rng(0)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 400)))
    params = INDICATOR_PARAMS[name]
    for end in ("lo", "hi"):
        values = {k: getattr(r, end) for k, r in params.items()}
        if name == "macd":
            values = (
                {"fast": 2, "slow": 3, "signal": 2}
                if end == "lo"
                else {"fast": 9_999, "slow": 10_000, "signal": 10_000}
            )
        values = {k: (int(v) if params[k].whole else v) for k, v in values.items()}
        feats = FeatureSettings(indicators=[IndicatorSpec(name=name, params=values)])
        prep = DataPreparation(feats, "1h")
        assert isinstance(prep.warm_up, int) and prep.warm_up >= 1
        out = INDICATORS[name].compute(c, c * 1.01, c * 0.99, c, rng.uniform(1, 9, 400), **feats.indicators[0].params)
        assert all(len(o) == 400 for o in out)
        if end == "lo":
            assert all(np.isfinite(o[-1]) for o in out)


def test_the_shipped_config_round_trips(tmp_path):
    s = load_config(Path(__file__).resolve().parents[1] / "config" / "config.yaml")
    assert load_config(write(tmp_path, dump_config(s))) == s


def test_dumped_settings_read_by_plain_yaml_are_the_same_tree():
    s = parse_config({"llm": {"mode": "off"}, "exchange": {"sandbox": True}}, "tree")
    assert yaml.safe_load(dump_config(s))["llm"]["mode"] == "off"  # quoted: YAML 1.1 readers see text too


def test_settings_in_code_refuse_infinity_too():
    with pytest.raises(Exception, match="finite"):
        Settings(costs={"slippage_bps": math.inf})
