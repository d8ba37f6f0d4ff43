# Front door. Recipes stay short; the logic lives in infra/*.sh and infra/resources.py.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# ---- knobs (override on the command line: make test TEST_ARGS='-- --nocapture') ----
STRIPE_PIPELINE_CACHE ?= $(HOME)/.cache/stripe-webhook-pipeline
VENV ?= $(STRIPE_PIPELINE_CACHE)/venv
TEMPLATE ?= template.yaml
SAM_CONFIG ?= infra/samconfig.toml
DEPLOY_ENV ?= default
TEST_ARGS ?=
CONSOLE_ARGS ?=
DEV_PORT ?= 9000
DYNAMODB_PORT ?= 8000
MOTO_PORT ?= 5050

# The tools venv first on PATH for every recipe: sam, cfn-lint, cargo-lambda, moto_server, and the
# python3 that has ziglang (cargo-lambda looks zig up through the first python3 on PATH).
export PATH := $(VENV)/bin:$(PATH)
export STRIPE_PIPELINE_CACHE
export STRIPE_PIPELINE_VENV := $(VENV)
export DEV_PORT DYNAMODB_PORT MOTO_PORT
export SAM_CLI_TELEMETRY := 0
export AWS_EC2_METADATA_DISABLED := true

.PHONY: help setup emulators emulators-stop emulators-status dev console test lint lint-rust lint-infra check-infra build deploy

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-17s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## install the tools venv, DynamoDB Local, the arm64 Rust target (skips what is there)
	bash infra/setup.sh

emulators: ## start DynamoDB Local and moto (SQS, Secrets Manager) in the background
	bash infra/emulators.sh start

emulators-stop: ## stop the emulators started by `make emulators`
	bash infra/emulators.sh stop

emulators-status: ## say whether the emulators answer
	bash infra/emulators.sh status

dev: ## run both functions under `cargo lambda watch` against the emulators (Ctrl-C stops)
	bash infra/dev.sh

console: ## the payments console on http://127.0.0.1:8787/ for the `make dev` tables (Ctrl-C stops)
	cargo run --quiet -p stripe-webhooks -- --env-file .local/dev.env console $(CONSOLE_ARGS)

test: ## cargo test --workspace against the emulators (starts them if needed)
	bash infra/test.sh $(TEST_ARGS)

lint: lint-rust check-infra ## rustfmt, clippy -D warnings, then the template checks

lint-rust: ## rustfmt --check and clippy -D warnings
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

check-infra: ## cfn-lint, sam validate --lint, checkov on the template (offline, ~10 s)
	bash infra/check-infra.sh $(TEMPLATE)

lint-infra: check-infra

build: ## sam build (cargo lambda + zig, arm64), then the artifact sizes, unzipped and zipped
	bash infra/build.sh $(TEMPLATE) $(SAM_CONFIG)

deploy: build ## sam deploy --guided, test stack (DEPLOY_ENV=live: the live stack); needs AWS credentials
	sam deploy --guided --config-file $(SAM_CONFIG) --config-env $(DEPLOY_ENV)

# ---- issue 7: benchmarks and chaos (bench/; figures in BENCHMARKS.md) ----
.PHONY: bench chaos chaos-short
bench: ## measure verification, load, cold start, size and cost against Flask/Express; writes BENCHMARKS.md
	bash bench/run.sh
chaos: ## Stripe-like deliveries of >=10 000 events through faults and processor kills; checks nothing lost or doubled
	bash bench/chaos.sh full
chaos-short: ## the chaos suite on ~1 000 events (under 3 minutes)
	bash bench/chaos.sh short
