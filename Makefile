# napari-ivoma: `make demo` (set up + run the headless demo), `make test` (set up + run all tests)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ivoma-installed
DATA   ?= ../shared/data

.PHONY: help venv demo test lint bench bench-sample check-system clean

help:
	@echo "make demo   - create .venv, generate the sample clips, run scribbles -> CPSM -> MRGS, write demo_out/"
	@echo "make test   - create .venv and run the whole test suite (napari GUI tests under Xvfb)"
	@echo "make bench  - run ivoma-bench on $(DATA)/davis and $(DATA)/cells/Fluo-N2DH-SIMplus-01"
	@echo "make lint   - ruff"

# The venv is (re)installed whenever pyproject.toml changes. torch==2.13.0 first: it is the CPU
# build available locally; any other torch request pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/ivoma demo --out demo_out --samples sample_data/clips

check-system:
	@bash tools/check_system.sh

test: $(STAMP) check-system
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests tools sample_data

bench: $(STAMP)
	$(BIN)/ivoma-bench $(DATA)/davis $(DATA)/cells/Fluo-N2DH-SIMplus-01 --out bench_out

bench-sample: $(STAMP)
	$(BIN)/ivoma-bench --sample --out bench_out/sample

clean:
	rm -rf demo_out bench_out .pytest_cache
