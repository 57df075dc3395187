# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint kafka bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/editstream demo

test: $(STAMP)
	$(VENV)/bin/ruff check streams agents schemas editstream tests bench
	$(PY) -m pytest -q -p no:cacheprovider; rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

kafka: $(STAMP)
	$(VENV)/bin/editstream broker --kind kafka --data-dir .cache/kafka-data

bench: $(STAMP)
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) demo-output .pytest_cache
