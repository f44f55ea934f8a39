# Everything installs itself into .venv: a fresh clone needs only python3 (3.11+) and make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
STAGE  ?= dev

.PHONY: install demo test lint bench clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: install  ## the whole product on the embedded local AWS; writes .demo/
	$(PY) -m chalicelib.local.demo

lint: install
	$(PY) -m ruff check .

test: install lint  ## unit + end-to-end tests on moto and the local CI emulator
	$(PY) -m pytest

bench: install  ## speed and size figures; writes BENCHMARKS.md and bench.json
	$(PY) -m bench

clean:
	rm -rf $(VENV) .demo .pytest_cache .ruff_cache
