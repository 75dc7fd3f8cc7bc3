# CVX — two commands do all the set-up on a fresh machine:
#   make run    create .venv if needed, install, and serve the app on the sample data
#   make test   create .venv if needed, install, and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast bench install chromium sample clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m streamlit run app.py --server.port $(PORT) --server.address 127.0.0.1

# Browser tests need Debian's Chromium; scripts/ensure_chromium.sh installs it when it can.
test: $(STAMP)
	bash scripts/ensure_chromium.sh || true
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not e2e and not slow"

bench: $(STAMP)
	$(PY) benchmarks/bench_features.py
	$(PY) benchmarks/bench_analysis.py

sample: $(STAMP)
	$(PY) sample_data/generate.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis tests/artifacts
