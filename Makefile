# ingestapp — `make run` starts the app on the embedded defaults; `make test` runs every check.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

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

test: lint
	$(BIN)/pytest

bench: $(VENV)/.dev
	$(BIN)/python bench/stream_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts
