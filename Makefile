# CVX — two commands do all the set-up on a fresh machine:
#   make run    create .venv if needed, install what the app needs (requirements.txt), and
#               serve the app on the sample data
#   make test   also install the test tools (requirements-dev.txt), then run the whole suite
# Every step prints a line first; pip shows what it collects and installs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501
RUN_STAMP := $(VENV)/.installed-run
STAMP     := $(VENV)/.installed

.PHONY: run test test-fast bench install install-run chromium sample clean

$(RUN_STAMP): requirements.txt pyproject.toml
	@echo "==> [1/4] Python virtual environment in $(VENV)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "==> [2/4] App and library requirements (requirements.txt; torch is the largest, a few minutes on a fresh machine)"
	$(PY) -m pip install --progress-bar on -r requirements.txt
	@echo "==> [3/4] CVX itself (editable)"
	$(PY) -m pip install --no-deps -e .
	@echo "==> [4/4] Compiling numba code once: UMAP on the path the app's UMAP takes, and the feature kernels (kept in numba's disk cache, so the app's first UMAP and first training load them instead of compiling)"
	$(PY) -c "from cvx_core.analysis.projection import warm_umap; print(f'UMAP compiled in {warm_umap():.1f} s')"
	$(PY) -c "from cvx_core.features import kernels; print(f'feature kernels compiled in {kernels.compile_all():.1f} s')"
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP) requirements-dev.txt
	@echo "==> Test tools (requirements-dev.txt: pytest, Playwright, ...)"
	$(PY) -m pip install --progress-bar on -r requirements-dev.txt
	touch $(STAMP)

install-run: $(RUN_STAMP)

install: $(STAMP)

run: $(RUN_STAMP)
	@echo "==> Starting the app: open http://127.0.0.1:$(PORT) (Ctrl+C stops it)"
	$(PY) -m streamlit run app.py --server.port $(PORT) --server.address 127.0.0.1

# Browser tests need Debian's Chromium; scripts/ensure_chromium.sh installs it when it can.
test: $(STAMP)
	@echo "==> Chromium for the browser tests"
	bash scripts/ensure_chromium.sh || true
	@echo "==> Test suite"
	$(PY) -m pytest -q

# everything but the browser tests and the `slow` list of tests/conftest.py (every training, every
# test over ~5 s): 1,024 tests in 1 min 43 s wall, 81 s CPU, at load 4-7 (README)
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not e2e and not slow"

bench: $(STAMP)
	$(PY) benchmarks/bench_features.py
	$(PY) benchmarks/bench_analysis.py

sample: $(STAMP)
	$(PY) sample_data/generate.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis tests/artifacts
