# Two commands on a machine with only Python 3.11+ and make: `make demo` and `make test`.
# Each creates .venv (once) and installs what it needs into it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test lint bench clean help

help:
	@echo "make demo   run the end-to-end demo against the built-in sandbox"
	@echo "make test   run the test suite (PostgreSQL tests need NUMSYNC_TEST_DATABASE_URL)"
	@echo "make lint   ruff + mypy + import-linter layer contracts + alembic check"
	@echo "make bench  run the benchmarks in bench/ (minutes)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "numsync needs Python 3.11 or newer (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: $(STAMP)
	$(BIN)/numsync demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	@# mypy and import-linter need the installed layout (numsync/daemon, ...): they check a throwaway
	@# non-editable install. In the source tree mypy cannot resolve `numsync.*` (the package dirs are
	@# mapped) and took every such import as Any, so an adapter could stray from `Source` unseen.
	@T=$$(mktemp -d) && $(BIN)/python -m pip install --quiet --no-deps --target $$T . 2>/dev/null && \
	  (cd $$T && $(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p numsync && \
	   PYTHONPATH=$$T $(BIN)/lint-imports $(CURDIR)/.importlinter --no-cache); \
	  rc=$$?; rm -rf $$T; exit $$rc
	@D=$$(mktemp -d) && $(BIN)/alembic -x url=sqlite:///$$D/check.db upgrade head && \
	  $(BIN)/alembic -x url=sqlite:///$$D/check.db check; rc=$$?; rm -rf $$D; exit $$rc

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info numsync-demo reports
