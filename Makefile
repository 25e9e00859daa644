# The two commands (see README):
#   make run    - the platform on embedded defaults, with sample knowledge and an admin login
#   make test   - the whole test suite against real PostgreSQL, Redis, Elasticsearch, Triton and llama.cpp
# Everything else is a helper of those two.

SHELL := /bin/bash

.PHONY: run test test-fast lint venv services-up services-down services-status lock bench loadtest evaluate

run:
	@deploy/local/run.sh

test:
	@deploy/local/test.sh

test-fast: venv
	@.venv/bin/pytest -m fast -q

lint: venv
	@.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/lint-imports --no-cache

venv:
	@deploy/local/bootstrap.sh --dev

# The pre-release load test (Locust) at 1x and 2x the target rate; docs/operations.md, "Load test".
loadtest:
	@deploy/loadtest/run.sh

# Retrieval and answer evaluation on the project's Korean dataset (docs/answer-quality.md).
evaluate:
	@RECORD="$(RECORD)" ANSWERS="$(ANSWERS)" STAGES="$(STAGES)" BACKENDS="$(BACKENDS)" deploy/local/evaluate.sh

services-up:
	@deploy/local/up

services-down:
	@deploy/local/down

services-status:
	@deploy/local/status

# Refresh the lock file after changing pyproject.toml dependencies.
lock: venv
	@.venv/bin/pip freeze --exclude-editable | grep -v '^vacant-house-chat' > requirements.lock && echo "requirements.lock updated"
