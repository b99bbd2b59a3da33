# The two commands of the README. Each sets up .venv (torch pinned to the CPU wheel) if it is missing.
VENV  := .venv
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
EIS   := $(VENV)/bin/eis

.PHONY: demo test lint bench setup browser docs

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

## demo: build the default zoo, run the default tracks, write the report (under ./out)
demo: $(STAMP)
	$(EIS) demo --out out

## test: the whole test suite, the strict docs build included (installs Debian chromium for the browser test when missing)
test: $(STAMP) browser
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/pytest -n 2 -q

browser:
	@command -v chromium >/dev/null 2>&1 || bash scripts/install-chromium.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/run_all.py

## docs: build the documentation site to site/ (strict; `make test` builds it too, in tests/test_docs.py)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site
