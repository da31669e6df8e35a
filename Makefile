# The tasks CI runs are the tasks people run.
CRD_DIRS := crds charts/vigil/crds manifests/crds
VENV_READY := .venv/.helm-python-sdk-0.2.2-aiosmtpd-1.4.6-pyyaml-6.0.3

.PHONY: scan test test-deps bench-deps generate check-generated fmt lint ci images push

IMAGES := target/images
REGISTRY ?=

## One-shot scan of this host by the agent, with the security events one look finds; no
## cluster needed.
scan:
	cargo run --release -q -p vigil-agent -- scan --events

## Every test of the workspace (installs first whatever the tests need).
# The chart check (Helm's lint and render) first, then unit, integration and doc tests;
# benches are not run here (cargo bench runs them).
test: test-deps
	.venv/bin/python scripts/chart.py check
	cargo test --workspace

## What the tests use beyond cargo: promtool, Alertmanager, buildah, containerd, runc and skopeo
## (Debian), Helm's SDK, PyYAML and the aiosmtpd SMTP server (PyPI, in .venv).
test-deps: $(VENV_READY)
	scripts/test-deps.sh

# A stamp written only after pip succeeded, so a failed install is retried.
$(VENV_READY):
	python3 -m venv .venv
	.venv/bin/pip install --quiet helm-python-sdk==0.2.2 aiosmtpd==1.4.6 pyyaml==6.0.3
	touch $@

## What the benchmarks read beyond the machine: the labelled series shipped in aeon's wheel
## (data files only: its numeric dependencies are not needed).
bench-deps: $(VENV_READY)
	.venv/bin/pip install --quiet --no-deps aeon==1.6.0

## The container images of both binaries, from release builds: $(IMAGES)/NAME.oci.tar (OCI
## archive), NAME.digest and NAME.sbom.cdx.json (CycloneDX). As root (buildah).
images: test-deps
	cargo build --release --locked -p vigil-agent -p vigil-operator
	scripts/image.sh build vigil-operator target/release/vigil-operator $(IMAGES)
	scripts/image.sh build vigil-agent target/release/vigil-agent $(IMAGES)

## Push both images to REGISTRY (host:port[/path]) and write $(IMAGES)/values.yaml, the chart
## values that run them by digest: helm install ... -f $(IMAGES)/values.yaml
push:
	@test -n "$(REGISTRY)" || { echo "usage: make push REGISTRY=host:port" >&2; exit 2; }
	@test -f $(IMAGES)/vigil-agent.oci.tar || { echo "no images: run make images first" >&2; exit 2; }
	scripts/image.sh push $(IMAGES)/vigil-operator.oci.tar $(REGISTRY)/vigil-operator > $(IMAGES)/operator.ref
	scripts/image.sh push $(IMAGES)/vigil-agent.oci.tar $(REGISTRY)/vigil-agent > $(IMAGES)/agent.ref
	printf 'operator:\n  image:\n    repository: %s\n    digest: %s\nagent:\n  image: %s\n' \
	  "$$(cut -d@ -f1 $(IMAGES)/operator.ref)" "$$(cut -d@ -f2 $(IMAGES)/operator.ref)" "$$(cat $(IMAGES)/agent.ref)" \
	  > $(IMAGES)/values.yaml
	cat $(IMAGES)/values.yaml

## Regenerate the CRD YAML and its copies from the Rust types, the CRD reference
## (docs/crd-reference.md), and the rendered chart.
generate: $(VENV_READY)
	cargo run -q -p vigil-crds --bin crdgen -- --reference docs/crd-reference.md $(CRD_DIRS)
	.venv/bin/python scripts/chart.py render

## Fail when a generated file is stale.
check-generated: $(VENV_READY)
	cargo run -q -p vigil-crds --bin crdgen -- --check --reference docs/crd-reference.md $(CRD_DIRS)
	.venv/bin/python scripts/chart.py check

fmt:
	cargo fmt --all

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

## What CI runs.
ci: lint test
