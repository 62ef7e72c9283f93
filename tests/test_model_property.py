"""Property tests: random edits to a model directory's JSON files, hashes resealed or not; only ModelError escapes
`MorningstarModel.load`, and every model that loads predicts finite values."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from functools import lru_cache
from pathlib import Path
from unittest import mock

import keras
import numpy as np
import pytest
from artifact_kit import SETTINGS, sample_bars, tiny_artifact
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from morningstar_trader.artifact import FORMAT, ModelError, _digest
from morningstar_trader.model import MorningstarModel

BARS = sample_bars()
SPECIAL = [
    math.nan,
    math.inf,
    -math.inf,
    1e308,
    -1e308,
    -0.0,
    0.0,
    5e-324,
    1e-7,
    1e-6,
    1.0,
    1.0000001,
    2.0,
    2**53 + 1,
    -1,
    0,
    1,
    2,
    10**30,
    True,
    False,
    None,
    "",
    "1h",
    "0.01",
    "split",
    "rsi_7",
    FORMAT,
    1,
]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.sampled_from(SPECIAL), st.text(max_size=12)
)
VALUES = st.recursive(
    SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=8
)
KINDS = ["delete", "replace", "retype", "add", "number", "number", "number", "raw"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The pristine tiny model directory, a working copy to break, and the pristine file contents."""
    base = tiny_artifact(tmp_path_factory.mktemp("prop") / "models" / "default" / "v1")
    work = Path(shutil.copytree(base, base.parent / "work"))
    return work, {n: (base / n).read_bytes() for n in ("metadata.json", "scaler.json")}


def _paths(tree, at=()):
    yield at
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _paths(v, (*at, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _paths(v, (*at, i))


def _get(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def _set(tree, path, value):
    if not path:
        return value
    _get(tree, path[:-1])[path[-1]] = value
    return tree


def _raw_edit(draw, text: str) -> bytes:
    how = draw(st.sampled_from(["bytes", "cut", "nest", "repeat", "digits", "bom", "latin1", "empty"]))
    if how == "bytes":
        return draw(st.binary(max_size=64))
    if how == "cut":
        return text[: draw(st.integers(0, len(text) - 1))].encode()
    if how == "nest":
        return (draw(st.sampled_from(['{"a":', "["])) * draw(st.integers(30, 200_000))).encode()
    if how == "repeat":
        return text.replace("{", '{"kind": 0, ', 1).replace('"kind": 0, ', '"kind": 0, "kind": 1, ', 1).encode()
    if how == "digits":
        return text.replace("{", '{"n": ' + "7" * draw(st.integers(4000, 5000)) + ", ", 1).encode()
    if how == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    if how == "latin1":
        return text.replace("{", '{"note": "caf\u00e9", ', 1).encode("latin-1")
    return b""


@st.composite
def edits(draw, pristine: dict):
    """(file name, new bytes, resealed?) for one edit of metadata.json or scaler.json."""
    name = draw(st.sampled_from(sorted(pristine)))
    text = pristine[name].decode()
    tree, kind = json.loads(text), draw(st.sampled_from(KINDS))
    event(f"{name} {kind}")
    paths = list(_paths(tree))
    sealed = draw(st.integers(0, 4)) > 0  # mostly resealed: an unsealed edit always fails its hash
    if kind == "raw":
        return name, _raw_edit(draw, text), sealed
    if kind == "delete":
        path = draw(st.sampled_from(paths[1:]))
        del _get(tree, path[:-1])[path[-1]]
    elif kind == "replace":
        tree = _set(tree, path := draw(st.sampled_from(paths)), draw(VALUES))
    elif kind == "retype":
        path = draw(st.sampled_from(paths[1:]))
        v = _get(tree, path)
        tree = _set(tree, path, draw(st.sampled_from([str(v), [v], {"v": v}, None, True, json.dumps(v)])))
    elif kind == "add":
        path = draw(st.sampled_from([p for p in paths if isinstance(_get(tree, p), dict)]))
        key = draw(
            st.sampled_from(["format", "files", "heads", "center", "scale", "kind", "window", "extra"])
            | st.text(max_size=6)
        )
        _get(tree, path)[key] = draw(VALUES)
    else:  # a number somewhere: a special value or a scaled one
        numbers = [p for p in paths if type(_get(tree, p)) in (int, float)]
        path = draw(st.sampled_from(numbers))
        x = _get(tree, path)
        tree = _set(
            tree,
            path,
            draw(
                st.sampled_from(SPECIAL)
                | st.floats()
                | st.sampled_from([-1, 1e-300, 1e300]).map(lambda k: x * k)
                | st.floats(0.5, 2).map(lambda k: x * k)
            ),
        )
    return name, json.dumps(tree).encode(), sealed


def _reseal(work: Path) -> None:
    try:
        meta = json.loads((work / "metadata.json").read_bytes())
    except (ValueError, RecursionError):
        return
    if not isinstance(meta, dict):
        return
    if isinstance(meta.get("files"), dict) and "scaler.json" in meta["files"]:
        meta["files"] = {
            **meta["files"],
            "scaler.json": hashlib.sha256((work / "scaler.json").read_bytes()).hexdigest(),
        }
    meta["metadata_sha256"] = _digest(meta)
    (work / "metadata.json").write_text(json.dumps(meta))


_KERAS_LOAD = keras.models.load_model


@lru_cache(maxsize=1)
def _network(file: str):
    return _KERAS_LOAD(file, compile=False)


_CALLS: dict = {}


def _load(work: Path, with_settings: bool, real_keras: bool):
    """`MorningstarModel.load`; unless `real_keras`, the network comes from a cache (model.keras is never edited here
    and its hash is checked first) and so does its compiled call: loading Keras and tracing the graph a thousand
    times would take most of the run, and neither depends on the JSON files under test."""
    if real_keras:
        return MorningstarModel.load(work, SETTINGS if with_settings else None)
    with mock.patch.object(keras.models, "load_model", lambda f, compile: _network(str(f))):
        model = MorningstarModel.load(work, SETTINGS if with_settings else None)
    model._call = _CALLS.setdefault(id(model.network), model._call)
    return model


def check_edit(world, edit, with_settings: bool, real_keras: bool) -> None:
    work, pristine = world
    for n, raw in pristine.items():
        (work / n).write_bytes(raw)
    name, raw, sealed = edit
    (work / name).write_bytes(raw)
    if sealed:
        _reseal(work)
    try:
        model = _load(work, with_settings, real_keras)
    except ModelError:
        event("refused")
        return
    event("accepted")
    s = model.prep.scaler
    assert np.isfinite(s.center_).all() and (s.scale_ > 0).all() and np.isfinite(s.scale_).all()
    pred = model.predict(model.prep.transform(BARS))
    for k, v in pred.items():
        assert np.isfinite(v).all(), (k, v)
    assert (pred["stop_loss"] > 0).all() and (pred["volatility"] > 0).all()


def _property(examples: int):
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )
    @given(data=st.data())
    def prop(world, data):
        edit = data.draw(edits(world[1]), "edit")
        check_edit(world, edit, data.draw(st.booleans(), "with_settings"), data.draw(st.integers(0, 19), "keras") == 0)

    return prop


test_artifact_edits_fast = _property(50)
test_artifact_edits_slow = pytest.mark.slow(_property(1_000))
