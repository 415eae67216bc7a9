# Benchmarks. Speeds are printed as ratios against references measured in the same run
# (the seed's loop, Stable-Baselines3): absolute timings on a shared machine are noisy.
# PYTHON=... picks the interpreter (default: the active one); OUT=... the folder for the markdown reports.
PYTHON ?= python
OUT ?= benchmarks/results

.PHONY: bench bench-quick

bench:
	@mkdir -p $(OUT)
	$(PYTHON) benchmarks/bench_dqn.py --out $(OUT)/bench_dqn.md
	$(PYTHON) benchmarks/bench_buffer.py --out $(OUT)/bench_buffer.md
	@if [ -f benchmarks/bench_fqi.py ]; then $(PYTHON) benchmarks/bench_fqi.py; fi

bench-quick:
	@mkdir -p $(OUT)
	$(PYTHON) benchmarks/bench_dqn.py --quick --out $(OUT)/bench_dqn_quick.md
	$(PYTHON) benchmarks/bench_buffer.py --quick --out $(OUT)/bench_buffer_quick.md
	@if [ -f benchmarks/bench_fqi.py ]; then if grep -q -- "--quick" benchmarks/bench_fqi.py; then $(PYTHON) benchmarks/bench_fqi.py --quick; else $(PYTHON) benchmarks/bench_fqi.py; fi; fi
