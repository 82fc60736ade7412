# kexue: `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv on first use: torch==2.13.0 (CPU wheel) first, then everything else.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kexue-installed

.PHONY: install demo test bench clean zh-mini bert4keras-oracle

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
	for b in benchmarks/[a-z]*.py; do [ $$b = benchmarks/report.py ] || $(PY) $$b || exit 1; done
	$(PY) benchmarks/report.py  # benchmarks/results.json + results.png from the speed benchmarks' numbers
bench: $(B4K_STAMP)  # benchmarks/bert4keras.py runs bert4keras itself in its virtualenv

clean:
	rm -rf $(VENV) .pytest_cache
	rm -rf $(B4K_VENV) $(JAX_VENV)

# Amos reference oracle (tests/test_amos_jestimator.py): jestimator's amos.py under JAX, own venv.
JAX_VENV  := .venv-jax
JAX_STAMP := $(JAX_VENV)/.kexue-installed
$(JAX_STAMP):
	$(PYTHON) -m venv $(JAX_VENV)
	$(JAX_VENV)/bin/python -m pip install -q --upgrade pip
	$(JAX_VENV)/bin/python -m pip install -q jax==0.10.2 jaxlib==0.10.2 flax==0.12.8 optax==0.2.8 jestimator==0.3.3
	touch $(JAX_STAMP)
.venv-jax: $(JAX_STAMP)
test: $(JAX_STAMP)
.PHONY: .venv-jax

# kexue-zh-mini from scratch (resumable: rerun to continue), written into kexue/weights/kexue-zh-mini
zh-mini: $(STAMP)
	$(PY) -m kexue zh-mini --out kexue/weights/kexue-zh-mini --work runs/zh-mini --steps 1500
