# kexue: `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv on first use: torch==2.13.0 (CPU wheel) first, then everything else.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kexue-installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kexue demo

test: $(STAMP)
	$(PY) -m pytest -q -x --durations=15 tests

bench: $(STAMP)
	for b in benchmarks/[a-z]*.py; do [ $$b = benchmarks/report.py ] || $(PY) $$b || exit 1; done
	$(PY) benchmarks/report.py  # benchmarks/results.json + results.png from the speed benchmarks' numbers

clean:
	rm -rf $(VENV) .pytest_cache
