# The two commands a newcomer needs: `make demo` (set up, then run a real model on the best
# local backend) and `make test`. Both set up .venv first; a second run is quick.
.PHONY: setup demo test bench

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/edgesdk devices
	.venv/bin/edgesdk generate smollm2-135m "Name three uses of an NPU in a phone." --max-tokens 96

# pytest exits 5 when it collects no tests: that is "ran nothing", not a failure.
test: setup
	.venv/bin/python -m pytest -q || [ $$? -eq 5 ]

bench: setup
	.venv/bin/python benchmarks/bench_session_overhead.py
	.venv/bin/python benchmarks/bench_int4_matmul.py --quick
	.venv/bin/python benchmarks/bench_llm.py
