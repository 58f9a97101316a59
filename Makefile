# Developer entry points. `make test` runs the same checks as CI (.ci/run), failing fast.

PY := .venv/bin/python
STAMP := .venv/.installed
# wildcard drops paths that do not exist yet (ruff fails on a missing path).
LINT_PATHS := $(wildcard src tests tutorials bench docs/conf.py docs/check_build.py)

# Tests and tutorials run on CPU; never grab all accelerator memory up front.
export JAX_PLATFORMS ?= cpu
export XLA_PYTHON_CLIENT_PREALLOCATE ?= false
export MPLBACKEND ?= Agg

.PHONY: venv demo lint typecheck pytest docs test test-slow format clean

# Extra pytest arguments (make pytest PYTEST_ARGS="-k mock").
PYTEST_ARGS ?=
# pytest worker processes (pytest-xdist), one per core, stealing work from each other so that
# both finish together. PYTEST_WORKERS=0 runs in this process.
PYTEST_WORKERS ?= 2

venv: $(STAMP)

# The stamp depends on pyproject.toml so that editing dependencies reinstalls.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[plot]' --group dev
	touch $(STAMP)

demo: venv
	$(PY) -m flaxmock demo

lint: venv
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m ruff check $(LINT_PATHS)

typecheck: venv
	$(PY) -m mypy

pytest: venv
	$(PY) -m pytest -p no:cacheprovider --durations=10 -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# Every test, the heavy ones kept out of `make test` included: the whole zoo through every
# test, the property test at 200 examples, big models.
test-slow: venv
	FLAXMOCK_SLOW=1 PROPERTY_EXAMPLES=200 $(PY) -m pytest -p no:cacheprovider --durations=20 -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

docs: venv
	$(PY) -m sphinx -b html -W --keep-going -n docs docs/_build/html
	$(PY) docs/check_build.py docs/_build/html

test: venv
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory typecheck
	# The tutorials run once, in the docs build (which fails on any error in them), not also
	# as scripts in pytest (tests/test_tutorials.py, run by `make pytest`).
	$(MAKE) --no-print-directory pytest PYTEST_ARGS="--ignore=tests/test_tutorials.py $(PYTEST_ARGS)"
	$(MAKE) --no-print-directory docs

format: venv
	$(PY) -m ruff format $(LINT_PATHS)
	$(PY) -m ruff check --fix $(LINT_PATHS)

clean:
	rm -rf docs/_build docs/tutorials build dist .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -not -path './.venv/*' -prune -exec rm -rf {} +
