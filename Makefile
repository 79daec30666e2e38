# Two commands on a fresh machine: `make run` (the toy pipeline) and `make test` (the suite).
# torch is installed first with an exact pin, so pip never resolves a multi-GB CUDA build on CPU.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast test-learning-matrix lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	touch $(STAMP)

run: install
	$(VENV)/bin/lit-qwen3 pipeline --config configs/toy/pipeline.yaml

# pytest-xdist: one worker per core; tests spread one by one, longest first, except files whose
# tests share a module fixture (built once) and the sandbox files (tests/conftest.py).
WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(WORKERS) --dist loadgroup --durations=12

test: install
	$(PYTEST)

# The edit-test loop: everything not marked slow (no model trained for more than a few seconds).
test-fast: install
	$(PYTEST) -m "not slow"

# The learning tests as another machine would run them: 1 and 2 torch threads, two other seeds.
test-learning-matrix: install
	for setting in LIT_QWEN3_TEST_THREADS=1 LIT_QWEN3_TEST_THREADS=2 LIT_QWEN3_TEST_SEED=1 \
		LIT_QWEN3_TEST_SEED=2; do \
		echo "== $$setting"; env $$setting $(PY) -m pytest -q -s -m learning || exit 1; \
	done

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: install
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
