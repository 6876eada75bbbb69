# Benchmarks (included by the top Makefile). Each target starts its own tritonserver on free
# loopback ports and stops it, builds the default model first if the repository is empty, and
# writes under reports/; `make report` turns everything into reports/benchmark.md.

CONCURRENCY ?= 1,2,3,4
RATIO_CONCURRENCY ?= 2,4
USERS ?= 4
SPAWN_RATE ?= 2
DURATION ?= 60s
MODEL_READY := $(MODEL_REPOSITORY)/rtmo/config.pbtxt

.PHONY: perf bench-stages load analyze analyze-ensemble analyze-gpu report engine-variants

perf: $(SETUP_STAMP) $(MODEL_READY)  ## perf_analyzer on rtmo and each composing model, bare onnxruntime, served/bare, CPU per process → reports/perf
	$(PY) perf/perf_sweep.py --model-repository $(MODEL_REPOSITORY) --concurrency $(CONCURRENCY)
	$(PY) perf/bare_onnxruntime.py --model-repository $(MODEL_REPOSITORY) --concurrency $(CONCURRENCY)
	$(PY) perf/served_vs_bare.py --model-repository $(MODEL_REPOSITORY) --concurrency $(RATIO_CONCURRENCY)
	$(PY) perf/cpu_per_process.py --model-repository $(MODEL_REPOSITORY)

engine-variants: $(SETUP_STAMP) $(MODEL_READY)  ## served rtmo under other engine thread layouts → reports/perf
	$(PY) perf/engine_variants.py --model-repository $(MODEL_REPOSITORY)

bench-stages: $(SETUP_STAMP)  ## preprocess / decode micro-benchmarks against the CPU targets
	$(PY) perf/bench_stages.py

load: $(SETUP_STAMP) $(MODEL_READY)  ## locust headless (USERS, SPAWN_RATE, DURATION) → reports/load
	$(PY) perf/load.py --model-repository $(MODEL_REPOSITORY) --users $(USERS) \
		--spawn-rate $(SPAWN_RATE) --duration $(DURATION)

analyze: $(SETUP_STAMP) $(MODEL_READY)  ## model-analyzer sweep of each composing model → perf/tuned_cpu.json
	$(PY) perf/analyze.py --model-repository $(MODEL_REPOSITORY)

analyze-gpu: $(SETUP_STAMP) $(MODEL_READY)  ## GPU host: model-analyzer sweep of the TensorRT flavour → perf/tuned_gpu.json
	$(PY) perf/analyze.py --model-repository $(MODEL_REPOSITORY) --search gpu

analyze-ensemble: $(SETUP_STAMP) $(MODEL_READY)  ## model-analyzer quick search of rtmo from the built configs (~20 min)
	$(PY) perf/analyze.py --model-repository $(MODEL_REPOSITORY) --search ensemble

report: $(SETUP_STAMP)  ## regenerate reports/benchmark.md and its plots
	$(PY) perf/report.py
