# The tasks CI runs are the tasks people run.
CRD_DIRS := crds charts/vigil/crds manifests/crds

.PHONY: scan test test-deps generate check-generated fmt lint ci

## One-shot scan of this host by the agent; no cluster needed.
scan:
	cargo run --release -q -p vigil-agent -- scan

## Every test of the workspace (installs first whatever the tests need).
# Unit, integration and doc tests; benches are not run here (cargo bench runs them).
test: test-deps
	cargo test --workspace

## System packages the tests use (promtool from Debian's prometheus).
test-deps:
	scripts/test-deps.sh

## Regenerate the CRD YAML and its copies from the Rust types.
generate:
	cargo run -q -p vigil-crds --bin crdgen -- $(CRD_DIRS)

## Fail when a generated file is stale.
check-generated:
	cargo run -q -p vigil-crds --bin crdgen -- --check $(CRD_DIRS)

fmt:
	cargo fmt --all

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

## What CI runs.
ci: lint test
