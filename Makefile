# Front door. Recipes stay short; the logic lives in infra/*.sh and infra/resources.py.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# ---- knobs (override on the command line: make test TEST_ARGS='-- --nocapture') ----
STRIPE_PIPELINE_CACHE ?= $(HOME)/.cache/stripe-webhook-pipeline
VENV ?= $(STRIPE_PIPELINE_CACHE)/venv
TEMPLATE ?= template.yaml
SAM_CONFIG ?= infra/samconfig.toml
TEST_ARGS ?=
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

.PHONY: help setup emulators emulators-stop emulators-status dev test lint lint-rust lint-infra build deploy

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

test: ## cargo test --workspace against the emulators (starts them if needed)
	bash infra/test.sh $(TEST_ARGS)

lint: lint-rust lint-infra ## rustfmt, clippy -D warnings, then the template linters

lint-rust:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

lint-infra: ## cfn-lint and sam validate --lint on the template (offline)
	cfn-lint $(TEMPLATE)
	sam validate --lint --template $(TEMPLATE)

build: ## sam build (cargo lambda, arm64), then show the artifact sizes
	sam build --template $(TEMPLATE) --config-file $(SAM_CONFIG)
	@ls -l .aws-sam/build/*/bootstrap | awk '{printf "%8.2f MB  %s\n", $$5 / 1048576, $$9}'

deploy: build ## sam deploy --guided with infra/samconfig.toml (needs AWS credentials)
	sam deploy --guided --config-file $(SAM_CONFIG)
