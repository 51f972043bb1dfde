# crystal QC: two commands on a fresh machine.
#   make run   - create .venv if needed, install the runtime requirements, start the app on 127.0.0.1
#   make test  - create/update .venv with the test requirements and run every test
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501

.PHONY: run test bench train clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Stamps make pip run again only when a requirements file changed.
$(VENV)/.runtime-stamp: requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-stamp: requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.runtime-stamp $@

run: $(VENV)/.runtime-stamp
	$(PY) -m streamlit run app.py --server.port $(PORT)

test: $(VENV)/.dev-stamp
	$(PY) -m pytest -q -n 2 tests

bench: $(VENV)/.dev-stamp
	$(PY) bench/bench_pipeline.py

clean-venv:
	rm -rf $(VENV)
