# Every target runs the idempotent bootstrap first; it returns at once when nothing changed.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test test-all lint bench bench-check clean

setup:
	@bash scripts/bootstrap.sh

demo: setup
	$(PY) -m rayloom.cli run $(ARGS)

# The CI command: ruff, then every test that is not marked slow or gpu.
test: setup
	.venv/bin/ruff check .
	$(PY) -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest -m "not gpu" $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check platform jobs tests bench

bench: setup
	$(PY) bench/run.py $(ARGS)

# Short re-run of each benchmark, each ratio printed beside the recorded one; writes nothing.
bench-check: setup
	$(PY) bench/run.py --check $(ARGS)

clean:
	rm -rf runs outputs .pytest_cache
