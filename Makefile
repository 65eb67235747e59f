# Set-up and everyday targets. `make demo` and `make test` work on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIPELINE := $(BIN)/pipeline
DEMO_DIR := out/demo
# the packages pyproject.toml installs (tests/test_makefile.py keeps the two lists the same)
PACKAGES := contracts pipeline workers collector

.PHONY: install demo test test-fast bench compat clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(PIPELINE): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e .
	@touch $(PIPELINE)

# bytecode written ahead: every process of a run (the supervisor and each child) would
# otherwise compile what it imports at each start where PYTHONDONTWRITEBYTECODE is set or
# __pycache__ cannot be written (--user): ~0.02-0.03 CPU-s a run for contracts alone
install: $(PIPELINE)
	@$(BIN)/python -m compileall -q $(PACKAGES)

$(BIN)/pytest: $(PIPELINE)
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(BIN)/pytest

demo: install
	@mkdir -p $(DEMO_DIR)
	$(BIN)/python -m pipeline.tracegen $(DEMO_DIR)/demo.pcap --sessions 300 --truth $(DEMO_DIR)/truth.json
	$(PIPELINE) start --workers 2 --read $(DEMO_DIR)/demo.pcap --output jsonl:$(DEMO_DIR)/sessions.jsonl --stats-json $(DEMO_DIR)/run.json
	@echo "records: $(DEMO_DIR)/sessions.jsonl  statistics: $(DEMO_DIR)/run.json"
	@head -n 2 $(DEMO_DIR)/sessions.jsonl

# pytest exits 5 when it collects nothing: not a failure of the code under test.
# `install` first: the bytecode the suite's hundreds of runs would each compile again
test: install $(BIN)/pytest
	$(BIN)/python -m pytest -q -ra || [ $$? -eq 5 ]

test-fast: install $(BIN)/pytest
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python bench/run.py

compat: install
	$(PY) ../shared/checks/nfstream_compat.py

clean:
	rm -rf out build *.egg-info
