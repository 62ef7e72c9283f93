"""Model directories: every file verified at load (hashes, schemas); each repro of issue 16 is a named regression
test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from artifact_kit import SETTINGS, as_format_1, read, reseal, sample_bars, tiny_artifact, write
from conftest import TINY, Project, write_config

from morningstar_trader.artifact import ModelError, resolve_model_dir
from morningstar_trader.config import Settings
from morningstar_trader.inference import OnnxModel, has_onnx, load_onnx_model
from morningstar_trader.model import MorningstarModel, save_model
from morningstar_trader.rules import signal_model


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    return tiny_artifact(tmp_path_factory.mktemp("artifact") / "models" / "default" / "v1")


@pytest.fixture
def art(original, tmp_path) -> Path:
    """A fresh copy of the tiny model directory to break."""
    return Path(shutil.copytree(original, tmp_path / "models" / "default" / "v1"))


def refused(path: Path, *fragments: str, settings=None) -> str:
    """Load `path`, expect a ModelError naming the directory and each fragment; return its message."""
    with pytest.raises(ModelError) as e:
        MorningstarModel.load(path, settings)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg, msg
    for f in fragments:
        assert f in msg, (f, msg)
    return msg


def edit_meta(path: Path, sealed: bool = True, **changes) -> None:
    write(path, "metadata.json", read(path, "metadata.json") | changes, sealed)


def edit_spec(path: Path, **changes) -> None:
    meta = read(path, "metadata.json")
    edit_meta(
        path,
        features={k: v for k, v in meta["features"].items() if changes.get(k, 0) is not None}
        | {k: v for k, v in changes.items() if v is not None},
    )


def edit_scaler(path: Path, sealed: bool = True, **changes) -> None:
    write(path, "scaler.json", read(path, "scaler.json") | changes, sealed)


def test_the_tiny_artifact_loads_with_and_without_settings_and_predicts_finite_values(art):
    for settings in (None, SETTINGS):
        model = MorningstarModel.load(art, settings)
        pred = model.predict(model.prep.transform(sample_bars()))
        assert all(np.isfinite(v).all() for v in pred.values())
    assert sorted(read(art, "metadata.json")["files"]) == ["MODEL_CARD.md", "model.keras", "model.onnx", "scaler.json"]


def test_the_onnx_network_loads_verified_and_predicts_what_keras_predicts(art):
    keras_model, onnx_model = MorningstarModel.load(art, SETTINGS), load_onnx_model(art, SETTINGS)
    x = keras_model.prep.transform(sample_bars())
    want, got = keras_model.predict(x), onnx_model.predict(x)
    assert sorted(got) == sorted(want) and (got["action"] == want["action"]).all()
    assert max(float(np.abs(got[k] - want[k]).max()) for k in want) <= 1e-5
    assert read(art, "metadata.json")["onnx"]["max_abs_diff"] <= 1e-5
    (art / "model.onnx").write_bytes(b"not a network")
    with pytest.raises(ModelError, match="model.onnx"):
        load_onnx_model(art, SETTINGS)


def test_the_runtime_setting_chooses_onnx_or_keras_and_an_older_model_runs_with_keras(art, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(art, models / "m" / "v1")
    base = SETTINGS.model_dump() | {"paths": {**SETTINGS.paths.model_dump(), "models_dir": models}}
    chosen = {
        runtime: type(signal_model(Settings(**base | {"model": {"name": "m", "version": "v1", "runtime": runtime}})))
        for runtime in ("onnx", "keras")
    }
    assert chosen == {"onnx": OnnxModel, "keras": MorningstarModel}
    meta = read(models / "m" / "v1", "metadata.json")  # as saved before model.onnx: the Keras network runs
    write(
        models / "m" / "v1",
        "metadata.json",
        meta | {"files": {k: v for k, v in meta["files"].items() if k != "model.onnx"}},
    )
    (models / "m" / "v1" / "model.onnx").unlink()
    assert not has_onnx(models / "m" / "v1")
    settings = Settings(**base | {"model": {"name": "m", "version": "v1"}})
    assert isinstance(signal_model(settings), MorningstarModel)


# ---- metadata.json (issue 16 repros) ----


def test_metadata_null_is_a_model_error(art):
    (art / "metadata.json").write_text("null")
    refused(art, "metadata.json must hold a JSON object, got None")


def test_metadata_not_utf8_is_a_model_error(art):
    (art / "metadata.json").write_bytes(b'{"format": 2, "note": "caf\xe9"}')
    refused(art, "metadata.json is not UTF-8 (byte 26)", "allowed: the UTF-8 JSON")


def test_metadata_deeply_nested_is_a_model_error(art):
    (art / "metadata.json").write_text('{"a":' * 100_000 + "{")
    refused(art, "metadata.json is nested more than 32 levels deep")


def test_metadata_deeply_nested_inside_a_descriptive_field_is_a_model_error(original, tmp_path):
    art = Path(shutil.copytree(original, tmp_path / "v1"))
    nested: list = []
    for _ in range(200):
        nested = [nested]
    edit_meta(art, notes=nested)
    refused(art, "metadata.json is nested more than 32 levels deep")


def test_metadata_missing_gap_policy_is_a_model_error(art):
    edit_spec(art, gap_policy=None)
    refused(art, "metadata.json: features.gap_policy: missing")


def test_metadata_missing_context_names_is_a_model_error(art):
    edit_spec(art, context_names=None)
    refused(art, "metadata.json: features.context_names: missing")


def test_metadata_package_version_of_wrong_type_is_a_model_error(art):
    edit_meta(art, package_version=0.1)
    refused(art, "metadata.json: package_version: Input should be a valid string (got 0.1)")


@pytest.mark.parametrize(
    "value, says",
    [
        ("0.01", "target_scale: Input should be a valid dictionary or instance of TargetScale (got '0.01')"),
        ({"volatility": "0.01", "sl_tp": 0.02}, "target_scale.volatility: Input should be a valid number (got '0.01')"),
        ({"volatility": 0.01}, "target_scale.sl_tp: missing"),
        (
            {"volatility": 0.01, "sl_tp": 0.02, "price": 1.0},
            "target_scale.price: unknown field; allowed here: volatility, sl_tp",
        ),
    ],
    ids=["string", "string-value", "missing-head", "unknown-head"],
)
def test_metadata_target_scale_of_wrong_type_is_a_model_error(art, value, says):
    edit_meta(art, target_scale=value)
    refused(art, says)


def test_metadata_feature_names_of_wrong_type_are_a_model_error(art):
    edit_spec(art, technical_names="rsi_7 natr_7 log_return_1")
    refused(
        art, "metadata.json: features.technical_names: Input should be a valid list (got 'rsi_7 natr_7 log_return_1')"
    )


def test_metadata_with_a_repeated_key_is_a_model_error(art):
    text = (art / "metadata.json").read_text()
    (art / "metadata.json").write_text(text.replace('"heads": [', '"heads": ["signal"], "heads": [', 1))
    refused(art, "metadata.json is not valid JSON: key 'heads' appears twice")


def test_metadata_listing_a_file_outside_the_directory_is_a_model_error(art):
    meta = read(art, "metadata.json")
    edit_meta(art, files=meta["files"] | {"../../../etc/passwd": "0" * 64})
    refused(art, "files.../../../etc/passwd.[key]: String should match pattern")


# ---- scaler.json (issue 16 repros) ----


@pytest.mark.parametrize(
    "raw, says",
    [
        (b"null", "scaler.json: not a valid saved scaler: (top level): Input should be a valid dictionary"),
        (b'{"kind": "RobustScaler", "feature_names": ["\xff"]}', "scaler.json is not UTF-8 (byte 44)"),
        (b"[" * 100_000, "scaler.json is nested more than 32 levels deep"),
        (b"[" * 50 + b"]" * 50, "scaler.json is nested more than 32 levels deep"),
    ],
    ids=["null", "not-utf8", "deeply-nested", "nested-50"],
)
def test_scaler_file_that_is_not_a_scaler_is_a_model_error(art, raw, says):
    (art / "scaler.json").write_bytes(raw)
    reseal(art)
    refused(art, says)


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("center", [None] * 7, "center.0: Input should be a valid number (got None)"),
        ("scale", [None] * 7, "scale.0: Input should be a valid number (got None)"),
        ("center", ["0.1"] * 7, "center.0: Input should be a valid number (got '0.1')"),
        ("scale", "1.0", "scale: Input should be a valid list (got '1.0')"),
        ("center", [0.0] * 6, "center and scale need one number per feature name (7), got 6 and 7"),
        ("scale", [1.0] * 8, "center and scale need one number per feature name (7), got 7 and 8"),
        ("scale", [0.0] * 7, "scale.0: Input should be greater than 0 (got 0.0)"),
        ("feature_names", "rsi_7", "feature_names: Input should be a valid list (got 'rsi_7')"),
        ("feature_names", [1, 2, 3, 4, 5, 6, 7], "feature_names.0: Input should be a valid string (got 1)"),
    ],
    ids=[
        "center-none",
        "scale-none",
        "center-strings",
        "scale-string",
        "center-short",
        "scale-long",
        "scale-zero",
        "names-string",
        "names-ints",
    ],
)
def test_scaler_numbers_of_wrong_type_or_length_are_a_model_error_at_load_not_at_first_use(art, field, value, says):
    edit_scaler(art, **{field: value})
    refused(art, "scaler.json: not a valid saved scaler: " + says)


def test_scaler_nan_centre_is_a_model_error(art):
    center = read(art, "scaler.json")["center"]
    edit_scaler(art, center=[float("nan"), *center[1:]])
    refused(art, "scaler.json: not a valid saved scaler: center.0: Input should be a finite number (got nan)")


def test_target_scale_sl_tp_1e308_is_a_model_error(art):
    edit_meta(art, target_scale={"volatility": 0.01, "sl_tp": 1e308})
    refused(art, "metadata.json: target_scale.sl_tp: Input should be less than or equal to 1 (got 1e+308)")


# ---- every file hashed ----


def test_a_finite_edit_to_scaler_json_is_found_by_its_hash(art):
    center = read(art, "scaler.json")["center"]
    edit_scaler(art, sealed=False, center=[c + 0.5 for c in center])
    refused(art, "scaler.json does not match its sha256 in metadata.json (changed or corrupt)", "retrain it")


def test_a_finite_edit_to_metadata_json_is_found_by_its_own_hash(art):
    edit_meta(art, sealed=False, target_scale={"volatility": 0.02, "sl_tp": 0.02})
    refused(art, "metadata.json was changed after training (its content does not match its metadata_sha256)")


def test_re_indenting_metadata_json_changes_nothing(art):
    (art / "metadata.json").write_text(json.dumps(read(art, "metadata.json"), indent=7, sort_keys=True))
    MorningstarModel.load(art)


def test_the_model_card_is_hashed_too(art):
    (art / "MODEL_CARD.md").write_text("# a better model than it is\n")
    refused(art, "MODEL_CARD.md does not match its sha256")
    (art / "MODEL_CARD.md").unlink()
    refused(art, "lacks MODEL_CARD.md")


def test_non_finite_weights_are_a_model_error(tmp_path):
    from morningstar_trader.model import EnhancedHybridModel

    net = EnhancedHybridModel(12, 3, 4, SETTINGS.model).build(seed=1)
    net.set_weights([w * np.nan if i == 0 else w for i, w in enumerate(net.get_weights())])
    refused(tiny_artifact(tmp_path / "v1", net), "model.keras has non-finite weights", "retrain it")


# ---- saved before this change ----


def test_a_model_saved_before_every_file_was_hashed_asks_to_retrain(art):
    as_format_1(art)
    refused(
        art,
        "saved in format 1, before every file of a model was hashed",
        "retrain it: `morningstar train`",
        f"`make demo` trains one once {art.parent} is deleted",
    )


def test_a_stale_default_model_stops_the_cli_with_one_line_saying_retrain(original, tmp_path):
    project = Project(
        tmp_path, write_config(tmp_path, "http://127.0.0.1:9", extra=f"features: {json.dumps(TINY['features'])}\n")
    )
    stale = Path(shutil.copytree(original, tmp_path / "models" / "default" / "20240101T000000Z"))
    as_format_1(stale)
    proc = project.run(
        "backtest",
        "--exchange",
        "synthetic",
        "--pairs",
        "ETH/USDT",
        "--strategy",
        "model",
        "--llm-mode",
        "off",
        check=1,
        timeout=300,
    )  # TensorFlow's import alone can take a minute on a loaded machine
    ours = [
        line for line in proc.stderr.splitlines() if line.startswith("morningstar")
    ]  # (the rest is TensorFlow's start-up)
    assert (
        len(ours) == 1 and ours[0].startswith("morningstar: error: model ") and proc.stderr.endswith(ours[0] + "\n")
    ), proc.stderr
    assert "saved in format 1" in proc.stderr and "retrain it" in proc.stderr and "Traceback" not in proc.stderr


# ---- saving ----


def test_a_save_that_fails_leaves_nothing_behind(original, tmp_path):
    model = MorningstarModel.load(original)
    with pytest.raises(
        ModelError,
        match=r"refusing to save model .*target_scale.volatility: Input should be greater than or equal to 0.000001",
    ):
        save_model(
            tmp_path / "m" / "v1",
            model.network,
            model.prep,
            {"heads": ["signal"], "target_scale": {"volatility": 0.0, "sl_tp": 0.02}},
        )
    assert list((tmp_path / "m").iterdir()) == []
    with pytest.raises(ModelError, match="extra files"):
        save_model(
            tmp_path / "m" / "v1",
            model.network,
            model.prep,
            {"heads": ["signal"], "target_scale": {"volatility": 0.01, "sl_tp": 0.02}},
            {"../escape.md": "x"},
        )
    with pytest.raises(ModelError, match="exists; a version is written once"):
        save_model(original, model.network, model.prep, {})
    assert not (tmp_path / "escape.md").exists() and list((tmp_path / "m").iterdir()) == []


def test_a_version_still_being_written_is_not_the_latest(original, tmp_path):
    shutil.copytree(original, tmp_path / "default" / "v1")
    shutil.copytree(original, tmp_path / "default" / ".v2.partial-0123abcd")
    assert resolve_model_dir(tmp_path, "default").name == "v1"
