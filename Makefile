# Two entry points (README): `make worker` runs the worker, `make test` runs every check.
# Both install what they need first; nothing has to be set up by hand.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .tools
LIVEKIT_SERVER := $(TOOLS)/bin/server
LIVEKIT_VERSIONS := v1.13.5 v1.13.4 v1.12.0 v1.9.11

.PHONY: worker talk test test-fast setup python-deps node-deps web system-deps livekit-server lint typecheck pytest vitest local-convex vectors image cluster

worker: setup livekit-server
	$(PY) -m devtools.devstack

# The talk page (docs/talk.md): call the agents of `make worker` from a browser.
talk: setup
	$(PY) -m devtools.talk

test: setup livekit-server lint typecheck vitest pytest

# The inner loop: lint, Python types and the tests not marked e2e or slow (tests/conftest.py
# marks them by file; docs/testing.md). `make test` stays the gate.
test-fast: setup livekit-server lint
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q -m "not e2e and not slow" --durations=15

setup: python-deps node-deps web system-deps

python-deps: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,plot]'
	touch $@

node-deps: convex/node_modules/.installed
convex/node_modules/.installed: convex/package.json convex/package-lock.json
	npm --prefix convex ci --no-audit --no-fund
	touch $@

# The talk page's script: livekit-client (pinned in web/package.json) bundled by esbuild
# into the git-ignored web/dist, served by devtools.talk (no CDN).
web: web/dist/talk.js
web/node_modules/.installed: web/package.json web/package-lock.json
	npm --prefix web ci --no-audit --no-fund
	touch $@
web/dist/talk.js: web/node_modules/.installed web/tsconfig.json $(wildcard devtools/talk_page/*.ts)
	npm --prefix web run --silent build

# Debian packages the worker's tools and tests start for real: redis-server (tiers,
# fleet, LiveKit cluster routing), espeak-ng and sox (real speech for the OpenAI stand-in
# and the callers), haproxy (the cluster's load balancer), chromium and its driver (the
# talk page's browser test), buildah and debootstrap (the container image test).
APT_PACKAGES := redis-server espeak-ng sox haproxy chromium chromium-driver buildah debootstrap
system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing $$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

# livekit-server from the Go module proxy into a git-ignored folder, reused when present.
livekit-server: $(LIVEKIT_SERVER)
$(LIVEKIT_SERVER):
	@mkdir -p $(TOOLS)/bin
	@for v in $(LIVEKIT_VERSIONS); do \
	  echo "building livekit-server $$v"; \
	  if CGO_ENABLED=0 GOBIN=$(abspath $(TOOLS))/bin go install github.com/livekit/livekit-server/cmd/server@$$v; then exit 0; fi; \
	done; echo "no livekit-server version could be built" >&2; exit 1

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy
	npm --prefix convex run typecheck
	npm --prefix web run typecheck

vitest:
	npm --prefix convex test

# --durations: the 15 slowest tests, so a test that grows slow is seen (and marked slow).
pytest:
	$(VENV)/bin/pytest -q --durations=15

# A LiveKit cluster on this machine (docs/fleet.md): redis-server, 2 livekit-server nodes,
# HAProxy in front, 2 workers on the load balancer's URL; Ctrl-C stops it all.
cluster: setup livekit-server
	$(PY) -m devtools.cluster --nodes 2 --workers 2

local-convex: setup
	npm --prefix convex run local -- --port 3210 --seed seed/demo-agents.json

vectors: python-deps
	$(PY) -m prompts.make_vectors

# The worker's container image (Dockerfile), built with buildah on a base made by
# debootstrap, cached under .tools/image (docs/container.md).
image: python-deps system-deps
	$(PY) -m devtools.image build
