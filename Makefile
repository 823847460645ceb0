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

# ruff check only: the code is written in compact 120-column lines, not ruff format's layout (which
# would rewrite 281 of 332 files and push modules past test_architecture's 400-line cap).
lint: setup
	.venv/bin/ruff check .

bench: setup
	$(PY) bench/run.py $(ARGS)

# Short re-run of each benchmark, each ratio printed beside the recorded one; writes nothing.
bench-check: setup
	$(PY) bench/run.py --check $(ARGS)

clean:
	rm -rf runs outputs .pytest_cache
