# The two commands a newcomer needs: `make demo` (set up only what the demo needs, then run a real model on the
# best local backend) and `make test` (set up everything the tests need, then run them). Setup output goes to
# $(VENV)/setup.log; a second run is quick. VENV=/some/where and PYTHON=python3.12 choose another environment.
VENV ?= .venv
PYTHON ?= python3
export VENV PYTHON
.PHONY: setup setup-demo demo test bench

# The demo's prompt: SmolLM2-135M Instruct answers it completely and readably; Gemma 3 270M (a base model)
# and more open questions drift into repetition at this size.
DEMO_PROMPT ?= Give me three tips for staying healthy.

setup:
	@bash scripts/setup.sh

setup-demo:
	@bash scripts/setup.sh --demo

demo: setup-demo
	@$(VENV)/bin/edgesdk devices
	@echo
	@echo '$$ edgesdk generate smollm2-135m "$(DEMO_PROMPT)"'
	@$(VENV)/bin/edgesdk generate smollm2-135m "$(DEMO_PROMPT)" --max-tokens 96

# The lint gate first (the rules in pyproject.toml's [tool.ruff.lint]: bugs, not style), then the tests.
# pytest exits 5 when it collects no tests: that is "ran nothing", not a failure.
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest -q || [ $$? -eq 5 ]

bench: setup
	$(VENV)/bin/python benchmarks/bench_session_overhead.py
	$(VENV)/bin/python benchmarks/bench_int4_matmul.py --quick
	$(VENV)/bin/python benchmarks/bench_llm.py
