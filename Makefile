# ingestapp — `make run` starts the app on the embedded defaults; `make test` runs every check;
# `make check` is the edit-test loop (ruff + the tests that start no server or browser).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# pytest-xdist processes: `make test`'s parallel part keeps both cores busy (~90 % in vmstat), so a
# fourth process only adds contention (-n 3 381 s, -n 4 397 s); `make check`'s tests only compute,
# so one per core. docs/benchmarks.md section 7.
TEST_WORKERS ?= 3
# Bytecode caches are written, whatever the caller's environment says: without them pytest rewrites
# the asserts of 313 modules at every start of every xdist process (4 s of CPU each), and every
# gunicorn, worker and stage process a test starts compiles the package again.
unexport PYTHONDONTWRITEBYTECODE
CHECK_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
PYTEST := $(BIN)/pytest -p no:cacheprovider --dist loadgroup

.PHONY: run test check lint bench bench-check clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(BIN)/activate
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/activate
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

run: $(VENV)/.runtime
	$(BIN)/flask --app ingestapp db upgrade
	$(BIN)/flask --app ingestapp ingest samples --if-empty
	@$(BIN)/flask --app ingestapp users setup-link
	@echo "ingestapp: open http://$${INGEST_BIND:-127.0.0.1:8000}/"
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

lint: $(VENV)/.dev
	$(BIN)/ruff check .

# The timing-bound tests (marker serial) run after the rest, one at a time: under -n 3 on two
# cores a 50 ms hub-lag bound measures the neighbours, not the code.
test: lint
	$(PYTEST) -n $(TEST_WORKERS) -m "not serial"
	$(BIN)/pytest -p no:cacheprovider -m serial

# The tests marked neither server nor browser (tests/selection.py marks them by what they start),
# nor serial (timing bounds: make test runs them alone);
# INGEST_TEST_NO_SERVERS=1 makes a server a test starts anyway fail that test, naming the marker.
check: lint
	INGEST_TEST_NO_SERVERS=1 $(PYTEST) -n $(CHECK_WORKERS) -q -m "not server and not browser and not serial"

bench: $(VENV)/.dev
	$(BIN)/python bench/stream_bench.py

# Cheap guard against a fan-out regression: the broker's cost per event per stream against its
# budget (bench/fanout_bench.py, docs/benchmarks.md section 5); ~10 s, no server.
bench-check: $(VENV)/.dev
	$(BIN)/python bench/fanout_bench.py --check

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts
