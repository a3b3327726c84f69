# celery-autoscale: `make demo` runs the main job locally, `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Debian packages the tests use: a real Redis server, Redis Sentinel, and the browser Flower is checked in.
SYSTEM_PACKAGES := redis-server redis-sentinel chromium prometheus
# Debian packages `make image` builds with: podman (with runc, not crun), and mmdebstrap for the stand-in bases.
IMAGE_PACKAGES := podman runc mmdebstrap
# Debian packages of the e2e's real node (tools/e2e-cluster, node.py): its container runtime, the CNI plugins, conntrack for kube-proxy, ipset for kube-router.
NODE_PACKAGES := containerd containernetworking-plugins conntrack socat ipset

# checkov (the chart's security scan) pins libraries that clash with pytest's: its own venv.
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30

# The real-cluster tests build Kubernetes, etcd, KWOK and KEDA from Go modules into this cache.
E2E_CACHE ?= $(HOME)/.cache/celery-autoscale-e2e
export E2E_CACHE

.PHONY: demo demo-cluster test e2e e2e-build image bench bench-e2e report dist system-deps image-deps node-deps clean

# The sample app (src/tasks) is not installed: the demo, benchmarks and scripts import it from src/.
export PYTHONPATH := $(CURDIR)/src$(if $(PYTHONPATH),:$(PYTHONPATH))

# Distributions from this repository: the runtime (.) and the load generator (tools/loadgen), and,
# except for the demo, the e2e cluster the real-cluster tests, benchmarks and scripts import
# (tools/e2e-cluster, never published).
$(VENV)/.installed-%: pyproject.toml tools/loadgen/pyproject.toml tools/e2e-cluster/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ./tools/loadgen $(if $(filter demo,$*),,-e ./tools/e2e-cluster) -e ".[$*]"
	touch $@

demo: $(VENV)/.installed-demo  ## Redis, 3 workers, Flower on :5555; a burst and a ramp; a summary
	$(PY) -m loadgen.demo

$(CHECKOV_VENV)/bin/checkov:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q "checkov==$(CHECKOV_VERSION)"

test: system-deps $(VENV)/.installed-test $(CHECKOV_VENV)/bin/checkov  ## the whole test suite on real processes
	CHECKOV=$(CHECKOV_VENV)/bin/checkov $(PY) -m pytest -m "not e2e"

e2e-build:  ## build the control plane, the node's commands and KEDA from their Go modules (cached in E2E_CACHE)
	tools/e2e-cluster/build.sh

image: image-deps  ## the chart's images with podman: the Dockerfile's app image and stand-in bases (cached), one JSON line each
	images/build.sh

e2e: system-deps node-deps $(VENV)/.installed-e2e e2e-build image  ## autoscaling on a real control plane with the real KEDA; pods on a real node
	$(PY) -m pytest tests/e2e -m e2e

bench: $(VENV)/.installed-test  ## the benchmarks, one JSON line each
	$(PY) bench/send_throughput.py
	$(PY) bench/io_pool.py
	$(PY) -m bench.worker_overhead
	$(PY) -m bench.delivery_cost

bench-e2e: system-deps node-deps $(VENV)/.installed-e2e e2e-build image  ## which pods a scale-down removes, on the real control plane, one JSON line
	$(PY) -m bench.deletion_cost

report: system-deps node-deps $(VENV)/.installed-e2e e2e-build image  ## the scaling analysis: docs/scaling-report.md, bench/results/scaling.json (~1 h warm)
	$(PY) -m bench.scaling_report

demo-cluster: system-deps node-deps $(VENV)/.installed-e2e e2e-build image  ## the demo's burst and ramp on a real control plane + KEDA, replicas live
	$(PY) -m scripts.demo_cluster

dist: $(VENV)/.installed-test  ## dist/: the runtime's and the load generator's wheels and sdists, and the chart archive
	rm -rf dist
	$(PY) -m build --outdir dist .
	$(PY) -m build --outdir dist tools/loadgen
	$(PY) scripts/package_chart.py dist
	@ls -l dist

# install-missing PACKAGES: install the Debian packages whose command is missing when run as root, else say which.
define install-missing
	@missing=""; for p in $(1); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "please install the Debian packages:$$missing (apt-get install$$missing)"; exit 1; fi
endef

system-deps:  ## install missing Debian packages when run as root, else say what is missing
	$(call install-missing,$(SYSTEM_PACKAGES))

image-deps:  ## the same for the image build's packages
	$(call install-missing,$(IMAGE_PACKAGES))

node-deps:  ## the same for the real node's packages (the CNI plugins are no command: their bridge plugin is looked for)
	@if command -v containerd >/dev/null && command -v conntrack >/dev/null && command -v socat >/dev/null && command -v ipset >/dev/null && [ -x /usr/lib/cni/bridge ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing: $(NODE_PACKAGES)"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(NODE_PACKAGES) >/dev/null; \
	else echo "please install the Debian packages: $(NODE_PACKAGES)"; exit 1; fi

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .demo .demo-cluster artifacts .pytest_cache dist
