# The README's two commands: `make demo` and `make test`. Each creates or reuses .venv,
# installs the locked dependencies into it, then does its job. Needs Python >= 3.11 and git.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BYTES  := $(VENV)/.compiled
UV     := uv==0.13.8

.PHONY: setup demo test sync-check lock browser bench-setup

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed; set PYTHON=/path/to/python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(UV)
	@# the GPU build of TensorFlow (older locks) and the CPU build share one folder: remove both before installing the CPU one
	@if $(BIN)/uv pip show --python $(BIN)/python tensorflow >/dev/null 2>&1; then \
	  $(BIN)/uv pip uninstall --python $(BIN)/python tensorflow tensorflow-cpu; fi
	$(BIN)/uv pip install --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	@touch $@

# Bytecode compiled once: with PYTHONDONTWRITEBYTECODE set (as on the test machines) every process would compile every
# module it imports, every time (TensorFlow's import: 17 s of CPU instead of 7; `morningstar runs list`: 7 s instead of 2).
$(BYTES): $(STAMP)
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib/python3*/site-packages morningstar_trader
	@touch $@

setup: $(STAMP) $(BYTES)

## The main job on the embedded default: the synthetic sample data set, the default model trained on it (or the
## one already trained reused), then a papermill backtest of the trading-cycle notebook with the model, the
## simulated reviewer and simulated fills, saved under runs/ (with an HTML copy).
demo: setup
	$(BIN)/morningstar data sample
	$(BIN)/morningstar data show
	$(BIN)/morningstar alt show
	@if ls models/default/*/metadata.json >/dev/null 2>&1; then \
	  echo "reusing the model in models/default (delete that folder to train again)"; \
	else $(BIN)/morningstar train --exchange synthetic --quiet; fi
	@cat "$$(ls -d models/default/*/ | tail -n 1)MODEL_CARD.md"
	$(BIN)/morningstar run --mode backtest --exchange synthetic --start 2024-07-01 --llm-mode simulated --html
	@echo
	@echo "The CLI lives in .venv:  $(BIN)/morningstar --help   (or 'source $(BIN)/activate' once, then 'morningstar ...')"
	@echo "Open the dashboard (runs, the paper account, the candle store) in your browser:"
	@echo "    $(BIN)/morningstar dashboard        # then http://127.0.0.1:8866/  (Ctrl-C stops it)"
	@echo "or the run notebook above in JupyterLab:  $(BIN)/jupyter lab"

## The dashboard's browser tests drive Debian's chromium (never a browser downloaded by Playwright): installed here when
## missing and this is root; otherwise those tests skip, loudly (under CI=true they fail).
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium for the dashboard's browser tests (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	    || echo "!!! apt-get install chromium FAILED: the dashboard's browser tests will not run"; \
	else echo "!!! no chromium and no way to install it (not root, or no apt-get): the dashboard's browser tests will SKIP"; fi

## The whole suite: notebooks and package in sync, notebook tests, then pytest.
test: setup sync-check browser
	$(BIN)/ruff check --output-format concise morningstar_trader nbs tests bench scripts
	$(BIN)/ruff format --check --quiet nbs tests bench scripts
	$(BIN)/nbdev-test --n-workers 2
	$(BIN)/pytest -n 2 --dist loadgroup

# nbdev-clean and nbdev-export must change nothing: the package is what the notebooks export.
sync-check: $(STAMP)
	@state() { git status --porcelain --untracked-files=all -- nbs morningstar_trader; git diff -- nbs morningstar_trader; }; \
	before=$$(state | cksum); \
	$(BIN)/nbdev-clean && $(BIN)/nbdev-export; \
	if [ "$$before" != "$$(state | cksum)" ]; then \
	  echo "notebooks and package out of sync: nbdev-clean / nbdev-export changed these files (review and commit them):"; \
	  git status --short -- nbs morningstar_trader; exit 1; fi

## Re-resolve the pinned versions after changing dependencies in pyproject.toml.
lock:
	@test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet $(UV); }
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra lab --python-version 3.11 --quiet -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra lab --extra bench -c requirements.lock --python-version 3.11 --quiet -o requirements-bench.lock

## The benchmarks' peers that the project does not need (vectorbt for bench/bench_sweep.py), within the main lock's pins.
bench-setup: setup
	$(BIN)/uv pip install --python $(BIN)/python -r requirements-bench.lock
