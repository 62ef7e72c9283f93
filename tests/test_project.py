"""The project's own machinery: nbdev settings that papermill relies on, lazy imports, the config example."""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import shutil
import subprocess
import sys
import tomllib

import nbformat
from conftest import MORNINGSTAR, ROOT

import morningstar_trader

# Modules allowed to import TensorFlow: only model code.
MODEL_MODULES = {"model", "training"}


def test_nbdev_settings_live_in_pyproject():
    nbdev = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["nbdev"]
    assert "tags" in nbdev["allowed_cell_metadata_keys"]
    assert not (ROOT / "settings.ini").exists()


def test_nbdev_clean_keeps_the_papermill_parameters_tag(tmp_path):
    """Run the real nbdev-clean with this project's settings on a notebook with a tagged parameters cell."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "nbs").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("mode = 'backtest'", metadata={"tags": ["parameters"], "scrolled": True}),
        nbformat.v4.new_code_cell("print(mode)", metadata={"collapsed": True}),
    ]
    nbformat.write(nb, tmp_path / "nbs" / "cycle.ipynb")
    nbdev_clean = shutil.which("nbdev-clean", path=str(MORNINGSTAR.parent))
    subprocess.run([nbdev_clean], cwd=tmp_path, check=True, capture_output=True, timeout=60)
    cleaned = nbformat.read(tmp_path / "nbs" / "cycle.ipynb", as_version=4)
    assert cleaned.cells[0].metadata == {"tags": ["parameters"]}  # the tag survives; other metadata goes
    assert cleaned.cells[1].metadata == {}


def test_every_notebook_in_nbs_is_clean():
    """Committed notebooks carry no outputs or execution counts beyond what nbdev-clean leaves."""
    for path in sorted((ROOT / "nbs").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            assert set(cell.metadata) <= {"tags"}, (path.name, cell.metadata)
            if cell.cell_type == "code":
                assert cell.execution_count is None, path.name


def _run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120).stdout


def test_package_and_cli_do_not_import_tensorflow():
    modules = [m.name for m in pkgutil.iter_modules(morningstar_trader.__path__) if m.name not in MODEL_MODULES]
    assert {"cli", "config", "market_data", "store"} <= set(modules)
    out = _run_python(
        "import sys, importlib\n"
        f"for m in {modules!r}: importlib.import_module('morningstar_trader.' + m)\n"
        "from morningstar_trader.cli import main\n"
        "try: main(['--help'])\n"
        "except SystemExit: pass\n"
        "print('TF-LOADED' if 'tensorflow' in sys.modules or 'keras' in sys.modules else 'TF-FREE')\n"
    )
    assert out.strip().endswith("TF-FREE")


def test_morningstar_script_help():
    proc = subprocess.run([str(MORNINGSTAR), "data", "download", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--config PATH" in proc.stdout and "--data-dir DIR" in proc.stdout


def test_shipped_config_is_valid_and_safe():
    from morningstar_trader.config import load_config

    cfg = load_config(ROOT / "config" / "config.yaml")
    assert cfg.mode == "backtest"  # live trading is never the default
    assert cfg.exchange.api_url is None and not cfg.exchange.sandbox
    from morningstar_trader.config import Settings

    defaults = Settings()  # the commented example documents the defaults, and must not drift from them
    # but for the objective: the shipped config trains the exposure objective (an ensemble of 3); a config that does
    # not name one keeps the meaning it had, the classes
    shipped = cfg.training.model_copy(update={"objective": "classes", "ensemble": 1})
    assert (cfg.training.objective, cfg.training.ensemble) == ("sharpe", 3)
    # and for an exposure model's protective levels, as docs/EVALUATION.md measured them
    levels = cfg.decision.model_copy(update={"fallback_stop_vols": 3.0, "reward_risk": 2.0})
    assert (cfg.decision.fallback_stop_vols, cfg.decision.reward_risk) == (6.0, 4.0)
    assert (cfg.features, shipped, cfg.llm, cfg.model, levels, cfg.risk, cfg.costs) == (
        defaults.features,
        defaults.training,
        defaults.llm,
        defaults.model,
        defaults.decision,
        defaults.risk,
        defaults.costs,
    )


def test_no_import_circle_and_the_drivers_share_the_kernel():
    """Imports anywhere in a module count, function-local ones too: no circle; the backtest and the paper/live driver
    both import the kernel and neither imports the other; the kernel imports no driver."""
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    graph_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(graph_module)
    graph = graph_module.edges()
    assert graph_module.circles(graph) == []
    assert "kernel" in graph["backtest"] and "kernel" in graph["cycle"]
    assert "cycle" not in graph["backtest"] and "backtest" not in graph["cycle"]
    assert not graph["kernel"] & {"cycle", "backtest", "cli", "sweep", "schedule", "runs", "model", "training"}
    assert graph_module.circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]  # the check can fail


def test_only_the_model_module_imports_tensorflow_itself():
    """model.py loads TensorFlow behind `held_startup_notices`; every other module takes `keras`/`tf` from it, so no
    import order (isort's included) lets TensorFlow's start-up notices through."""
    for path in (ROOT / "morningstar_trader").glob("*.py"):
        if path.name == "model.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] in ("keras", "tensorflow") for n in names), f"{path.name} imports {names}"
