# One-command set-up: `make demo` and `make test` create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench setup data clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned and installed first so nothing pulls a CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[all,dev,ray]'
	-@$(MAKE) --no-print-directory data
	touch $(STAMP)

# System data sets and headless Chromium for the report's browser test (Debian packages):
# installed when running as root, skipped otherwise.
data:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  if [ ! -d /usr/share/datasets/fashion-mnist ] || [ ! -f /usr/share/wordnet/data.noun ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist wordnet-base) >/dev/null 2>&1 \
	      || echo "note: could not install dataset-fashion-mnist/wordnet-base; their experiments will say how"; \
	  fi; \
	  if ! command -v chromium >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
	      || echo "note: could not install chromium; tests/test_report_browser.py will be skipped"; \
	  fi; \
	else echo "note: not root, skipping Debian packages (dataset-fashion-mnist, wordnet-base, chromium)"; fi

demo: $(STAMP)
	$(BIN)/lossrate demo

# One BLAS/OpenMP thread per process: the suite starts worker processes (DDP, kill-and-resume),
# and oversubscribed BLAS threads made scipy fits 10-30x slower on a busy 2-core machine.
THREADS := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

test: $(STAMP)
	$(THREADS) $(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(THREADS) $(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(STAMP)
	for f in benchmarks/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
