# mario-kit: `make demo` runs the main job on small defaults, `make test` runs the test suite,
# `make check` its fast tier. All create .venv with Python 3.13 on first use and reuse it afterwards.

PYTHON ?= python3.13
VENV   := .venv
PY     := $(VENV)/bin/python
DEMO   ?= demo
export SDL_VIDEODRIVER ?= dummy
export SDL_AUDIODRIVER ?= dummy
export MPLBACKEND ?= Agg
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: setup browser demo lint check test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found. Install Python 3.13 (for example 'pyenv install 3.13') or run 'make PYTHON=/path/to/python3.13'." >&2; exit 2; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install -q -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
	@$(PY) -c "import mario_kit, torch, nes_py" || { echo "error: installing into $(VENV) failed (see above)" >&2; exit 1; }
	@touch $@

demo: setup
	$(PY) -m mario_kit demo --out $(DEMO) --force

# Chromium for the browser test (tests/test_browser.py), from Debian's packages where apt works;
# elsewhere that one test is skipped and says why.
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && \
	    apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; }; }; } || \
	  echo "note: Chromium could not be installed (apt-get install chromium chromium-driver); the browser test is skipped"

# Two workers (pytest-xdist), a test file each at a time, the longest files first (tests/conftest.py):
# most tests wait on a subprocess or on the emulator with one core, so two workers nearly halve the wall
# clock of a 2-core machine; a file's module fixtures (a Ray cluster, a trained model) are built once.
# `make test WORKERS=0` runs serially.
WORKERS ?= 2
XDIST = $(if $(filter 0,$(WORKERS)),,-n $(WORKERS) --dist loadfile --no-loadscope-reorder)

# Lint, layout and types (rules in pyproject.toml).
lint: setup
	$(PY) -m ruff check src tests bench
	$(PY) -m ruff format --check src tests bench
	$(PY) -m mypy

# The fast tier while working: lint, then the tests that start no process and train nothing
# (tests/conftest.py marks the others `slow` from their source).
check: lint
	$(PY) -m pytest $(XDIST) -m "not slow"

test: lint browser
	$(PY) -m pytest $(XDIST)

bench: setup
	$(PY) bench/collect.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .mypy_cache
