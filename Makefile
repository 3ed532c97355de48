# The two set-up commands: `make demo` and `make test`. Both create .venv and install flowforge into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU wheel of this exact version lies on the project's machines; any other spec pulls CUDA builds (GBs).
TORCH_SPEC := torch==2.13.0
PYTEST_ARGS ?=

.PHONY: all install demo test lint format clean docs serve-docs docs-figures docs-check

all: test

$(PY):
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml
	@# Leave an importable torch as it is; otherwise install the pinned CPU wheel before anything pulls another.
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,docs]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/flowforge fit --out runs/demo

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict -d site

serve-docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

# Rerun the tutorials' code and copy the figures it writes next to the pages (commit the PNGs).
docs-figures: $(STAMP)
	$(PY) docs/gen_figures.py

# The built site in headless Chromium (figures load, navigation works, screenshots in site/screenshots).
# Not part of `make test`: it needs chromium (Debian: apt-get install -y chromium).
docs-check: $(STAMP)
	FLOWFORGE_DOCS_BROWSER=1 DOCS_SCREENSHOTS=site/screenshots $(PY) -m pytest -p no:cacheprovider -o addopts="" tests/test_docs_browser.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
