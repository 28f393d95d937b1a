# The two commands of the README: `make serve` (flowrun's main job) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: serve demo test lint bench schemas clean

# Local demo secrets only: set real ones in the environment or as systemd credentials.
export SHOPIFY_WEBHOOK_SECRET ?= dev-only-shopify-secret
export WOOCOMMERCE_WEBHOOK_SECRET ?= dev-only-woocommerce-secret
export FLOWRUN_CUSTOM_SECRET ?= dev-only-custom-secret
export SHOPIFY_API_TOKEN ?= dev-only-shopify-token
export TWILIO_AUTH_TOKEN ?= dev-only-twilio-token
export SLACK_WEBHOOK_URL ?= http://127.0.0.1:9/dev-only-slack
export ZENDESK_API_TOKEN ?= dev-only-zendesk-token
export ONESIGNAL_API_KEY ?= dev-only-onesignal-key

$(BIN)/flowrun: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

serve: $(BIN)/flowrun  ## flowrun's main job: serve on SQLite (flowrun-state/) with the example config
	$(BIN)/flowrun serve --config examples/flowrun.yaml

demo: $(BIN)/flowrun  ## play the library against a checkout abandoned, then an order
	$(BIN)/flowrun dry-run flows/ --timeline examples/timelines/abandoned-then-order.yaml

lint: $(BIN)/flowrun
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint  ## everything CI runs
	$(BIN)/pytest

bench: $(BIN)/flowrun  ## print the performance figures (never pass/fail)
	benchmarks/run_all.sh

schemas: $(BIN)/flowrun  ## regenerate schemas/ from the code
	$(BIN)/flowrun schema --write schemas

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
