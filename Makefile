# Two commands do everything on a fresh machine:
#   make demo   train the MiniLM default on the built-in data, evaluate, export the bundle, predict, quick bench
#   make test   the test suite
# Both create .venv and install pairbert[dev] with torch pinned to the 2.13.0 CPU build (constraints.txt).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= runs/default
BUNDLE ?= bundles/default

.PHONY: install demo test test-slow test-gpu lint bench clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/pairbert train --output-dir $(RUN)
	$(BIN)/pairbert evaluate $(RUN)/best --data training/data/validation.jsonl
	$(BIN)/pairbert evaluate $(RUN)/best --data training/data/dev/casual_chat.jsonl
	$(BIN)/pairbert evaluate $(RUN)/best --data training/data/heldout/support_trivia.jsonl
	# ORT's dynamic int8 left out: it passes its 99 % gate by a hair (99.01 %), under the 99.5 % auto asks (README).
	# --skip-failed: a variant that misses its gate on a retrained model is left out with a warning.
	$(BIN)/pairbert export $(RUN)/best --out $(BUNDLE) --skip-failed \
		--variants fp32,optimized,fp16,openvino-fp32,openvino-bf16,openvino-int8
	$(BIN)/pairbert predict $(BUNDLE) -q "How long should I boil an egg for a soft yolk?" \
		-a "About six minutes in boiling water gives a set white and a runny yolk."
	$(BIN)/pairbert predict $(BUNDLE) -q "How long should I boil an egg for a soft yolk?" \
		-a "The capital of Australia is Canberra."
	$(BIN)/pairbert bench $(BUNDLE) --quick --out $(RUN)/bench-quick

test: install
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m slow

test-gpu: install
	$(BIN)/python -m pytest -m gpu

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf runs bundles build *.egg-info .pytest_cache
