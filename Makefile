# Himalia — the two commands of the README:
#   make run    create .venv, install everything, start hub + proxy on http://127.0.0.1:8000
#   make test   install what the tests need (chromium, PostgreSQL) and run the whole suite
# The system Python where there is one: every user's server runs from this venv as the user's own
# account, so the interpreter must be readable by all accounts (a pyenv under /root is not).
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= ./data
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 'setuptools>=77' wheel
	$(BIN)/python -m pip install -q --config-settings editable_mode=compat -e '.[singleuser,postgres,pam,test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/himalia --data-dir $(DATA)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP)
	bash scripts/test-setup.sh
	$(BIN)/ruff check .
	$(BIN)/mypy
	. scripts/test-env.sh && $(BIN)/python -m pytest -n 2 --dist loadgroup -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
