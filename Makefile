# Everything installs itself into .venv: a fresh clone needs only python3 (3.11+) and make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-layer.txt requirements-dev.txt pyproject.toml | cksum | cut -d' ' -f1)
STAGE  ?= dev
# make deploy/package CONFIG=rotation.yaml: validated (size too: deploy/preflight.py), then stored in SSM
# (/ci-key-rotator/<stage>/rotation-config; over 4 KB, compressed parts it names: deploy/config_store.py)
CONFIG ?=
CONFIG_FLAG = $(if $(CONFIG),--config $(CONFIG))
# make security: the scanners live in their own venv (checkov's dependencies would move the project's pins)
SEC_VENV  := .venv-security
SEC_STAMP := $(SEC_VENV)/.installed-$(shell cat requirements-security.txt | cksum | cut -d' ' -f1)

.PHONY: install demo test test-fast lint template-lint security bench deploy destroy package clean

$(STAMP): requirements.txt requirements-layer.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "CI Key Rotator needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) --version 2>&1)." \
	       "Install 3.11+ and run: make PYTHON=python3.11 $(MAKECMDGOALS)" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .  # the ci-key-rotator command
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: install  ## the whole product on the embedded local AWS; writes .demo/
	$(PY) -m local.demo

lint: install  ## ruff, and mypy (strict on chalicelib/)
	$(PY) -m ruff check .
	$(PY) -m mypy app.py chalicelib cli deploy

template-lint: install  ## the packaged template (built offline) and the CI identity templates pass cfn-lint
	$(PY) -m deploy template --stage $(STAGE) --out dist/offline-$(STAGE) >/dev/null
	$(VENV)/bin/cfn-lint dist/offline-$(STAGE)/sam.json templates/ci-identity/ci-user.yaml templates/ci-identity/deploy-role.yaml

test-fast: install  ## the unit tier only (no moto, no server): seconds
	$(PY) -m pytest -q -m unit

$(SEC_STAMP): requirements-security.txt
	@test -x $(SEC_VENV)/bin/python || $(PYTHON) -m venv $(SEC_VENV)
	$(SEC_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SEC_VENV)/bin/python -m pip install --quiet -r requirements-security.txt
	@rm -f $(SEC_VENV)/.installed-* && touch $@

security: install $(SEC_STAMP) template-lint  ## bandit, checkov, parliament against security/*-baseline.json (README "make security")
	$(PY) -m security.gate --template dist/offline-$(STAGE)/sam.json --venv $(SEC_VENV)

# Worker processes for make test (each starts its own embedded AWS); the tests wait on builds and HTTP as much
# as they compute, so one more worker than cores is faster on two cores.
TEST_WORKERS ?= 3

test: install lint template-lint security  ## every tier, in parallel, on moto and the local CI emulators
	$(PY) -m pytest -n $(TEST_WORKERS)

deploy: install  ## STAGE=dev [CONFIG=rotation.yaml] [LAYER_ARN=...]: chalice deploy, then what Chalice cannot create (README "Deploy to AWS")
	$(PY) -m deploy prepare --stage $(STAGE) $(CONFIG_FLAG) $(if $(ALLOW_ANY_REGION),--allow-region-outside-us-east-1) $(if $(LAYER_ARN),--layer-arn $(LAYER_ARN))
	$(VENV)/bin/chalice deploy --stage $(STAGE)
	$(PY) -m deploy apply --stage $(STAGE) $(CONFIG_FLAG)

destroy: install  ## STAGE=dev [DELETE_DATA=1]: remove the stage; the ledger, escrow, its key and the config stay unless DELETE_DATA=1
	$(PY) -m deploy destroy --stage $(STAGE) $(if $(DELETE_DATA),--delete-data)
	$(VENV)/bin/chalice delete --stage $(STAGE)

package: install  ## STAGE=dev [CONFIG=rotation.yaml]: one CloudFormation/SAM template, dist/$(STAGE)/sam.json, linted
	$(PY) -m deploy merge-template --stage $(STAGE) $(CONFIG_FLAG) --out dist/merge-$(STAGE).json
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(VENV)/bin/chalice package --stage $(STAGE) \
		--merge-template dist/merge-$(STAGE).json dist/$(STAGE)
	$(VENV)/bin/cfn-lint dist/$(STAGE)/sam.json

bench: install  ## speed and size figures; writes BENCHMARKS.md and bench.json
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(SEC_VENV) .demo .pytest_cache .ruff_cache
