# kexue: `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv on first use: torch==2.13.0 (CPU wheel) first, then everything else.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kexue-installed

.PHONY: install demo test bench clean bert4keras-oracle

# bert4keras itself, the oracle for kexue's bert4keras checkpoint reader and models, lives in
# its own virtualenv (TensorFlow is large); tests drive it in a subprocess. Its own `keras<=2.3.1`
# pin is obsolete, so it is installed without dependencies on top of tf-keras.
B4K_VENV  := .venv-bert4keras
B4K_STAMP := $(B4K_VENV)/.kexue-installed

$(B4K_STAMP):
	$(PYTHON) -m venv $(B4K_VENV)
	$(B4K_VENV)/bin/python -m pip install -q --upgrade pip
	$(B4K_VENV)/bin/python -m pip install -q tensorflow-cpu==2.21.0 tf-keras==2.21.0 numpy==2.4.6 safetensors==0.8.0
	$(B4K_VENV)/bin/python -m pip install -q --no-deps bert4keras==0.11.5
	touch $(B4K_STAMP)

bert4keras-oracle: $(B4K_STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kexue demo

test: $(STAMP) $(B4K_STAMP)
	$(PY) -m pytest -q -x --durations=15 tests

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
	rm -rf $(B4K_VENV)
