# kmm-dtk. `make demo` and `make test` are the two commands the README starts with.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test test-fast test-integration lint controlplane cluster plan bench bench-informer bench-operator bench-scale bench-registry registry-binary clean bundle image lock

# The virtualenv, rebuilt when the package's dependencies change.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# The main job: a local control plane with the sample cluster (the design document's upgrade) as a
# disconnected cluster with a local mirror registry, and the operator running against it; it prints
# what it found in the registry and the Builds it creates. Ctrl-C stops everything.
DEMO_ARGS ?=
demo: controlplane registry-binary
	$(PY) -m tests.support.localcluster --operator $(DEMO_ARGS)

# The same decisions offline, from a dump of cluster objects.
plan: $(VENV)/.installed
	$(VENV)/bin/kmm-dtk plan -f examples/design-cluster.yaml

# kube-apiserver + etcd for the tests, built once per machine into ~/.cache/kmm-dtk.
controlplane: $(VENV)/.installed
	$(PY) -m tests.support.binaries

# The registry tests run Debian's docker-registry on loopback; install it when root can.
registry-binary:
	@command -v docker-registry >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry; \
	  else echo "the tests need Debian's docker-registry package: sudo apt-get install docker-registry" >&2; exit 1; fi; }

# ruff (pycodestyle, pyflakes, isort, bugbear, pyupgrade, blind excepts, naming, unused noqa) and mypy
# (strict for kmm_dtk.core and kmm_dtk.kube), configured in pyproject.toml. Both report before it fails.
lint: $(VENV)/.installed
	@status=0; \
	$(VENV)/bin/ruff check . || status=1; \
	$(VENV)/bin/mypy || status=1; \
	exit $$status

# The whole suite: lint, then unit, property, CLI and integration tests on a real control plane and registry.
test: lint controlplane registry-binary
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not integration and not registry" $(PYTEST_ARGS)

test-integration: controlplane registry-binary
	$(PY) -m pytest -m "integration or registry" $(PYTEST_ARGS)

# A local control plane with the sample objects, in the foreground; kubeconfig in .cache/kubeconfig.
cluster: controlplane
	$(PY) -m tests.support.localcluster

# Benchmarks (not tests): tables of time and memory against baselines and targets, on a real
# control plane. The operator benchmark includes a 5-minute steady state.
bench: bench-informer bench-operator bench-registry

bench-informer: controlplane
	$(PY) -m bench.informer_bench

bench-operator: controlplane
	$(PY) -m bench.operator_bench $(BENCH_OPERATOR_ARGS)

# The operator benchmark at several numbers of Nodes, the rest fixed, with a linear fit.
BENCH_SCALE_NODES ?= 1000,2500,5000
bench-scale: controlplane
	$(PY) -m bench.scale --nodes $(BENCH_SCALE_NODES) $(BENCH_OPERATOR_ARGS)

bench-registry: $(VENV)/.installed registry-binary
	$(PY) -m bench.registry_bench

# The OLM bundle (bundle/: CSV, the ModuleBuild CRD, annotations, bundle.Dockerfile), generated from
# manifests/with-kmm by tools/bundle.py and checked with operator-sdk's bundle rules. Run it after any
# change to manifests/ (tests/test_bundle.py fails until then).
bundle: $(VENV)/.installed
	$(PY) -m tools.bundle
	$(PY) -m tools.bundle_validate bundle

# requirements.lock (the runtime dependencies of setup.cfg) and requirements-build.lock (setuptools and
# wheel of pyproject.toml), every package by version and hash, for the image build. pip-tools comes
# from PyPI into the venv; $$PIP_FIND_LINKS is cleared so that only PyPI's files are hashed. Pins are kept
# while they still satisfy setup.cfg; `make lock LOCK_ARGS=--upgrade` moves them all to the newest.
PIP_COMPILE = PIP_FIND_LINKS= $(VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras --no-emit-find-links \
	--no-emit-index-url $(LOCK_ARGS)
lock: $(VENV)/.installed
	$(PY) -m pip install --quiet "pip-tools>=7.4,<8"
	$(PIP_COMPILE) --output-file requirements.lock setup.cfg
	$(PIP_COMPILE) --allow-unsafe --build-deps-for=wheel --only-build-deps \
	  --output-file requirements-build.lock pyproject.toml

# The operator image from Containerfile, pushed to IMAGE_REPO; its pushed digest goes into
# manifests/manager/kustomization.yaml and the bundle is regenerated with it. Needs podman or buildah
# and a login to the registry (podman login IMAGE_REPO's host).
IMAGE_REPO ?= quay.io/kmm-dtk/kmm-dtk
image:
	@engine=$$(command -v podman || command -v buildah || true); \
	if [ -z "$$engine" ]; then \
	  echo "make image needs podman or buildah: install the podman package (dnf install podman, apt-get install podman)" >&2; \
	  exit 1; fi; \
	$(MAKE) --no-print-directory venv || exit 1; \
	version=$$($(PY) -c 'from tools.bundle import package_version; print(package_version())') || exit 1; \
	mkdir -p .cache && rm -f .cache/image.digest; \
	set -x; \
	"$$engine" build --build-arg VERSION=$$version -f Containerfile -t $(IMAGE_REPO):v$$version . && \
	"$$engine" push --digestfile .cache/image.digest $(IMAGE_REPO):v$$version && \
	$(PY) -m tools.image_digest --digest-file .cache/image.digest --name $(IMAGE_REPO)
	$(MAKE) bundle

clean:
	rm -rf $(VENV) .cache .pytest_cache .hypothesis *.egg-info
