# Benchmarks (included by the top Makefile). Each target starts its own tritonserver on free
# loopback ports and stops it, builds the default model first if the repository is empty, and
# writes under reports/; `make report` turns everything into reports/benchmark.md.

CONCURRENCY ?= 1,2,3,4
RATIO_CONCURRENCY ?= 2,4
USERS ?= 4
SPAWN_RATE ?= 2
DURATION ?= 60s
MODEL_READY := $(MODEL_REPOSITORY)/rtmo/config.pbtxt

.PHONY: perf bench-stages load analyze analyze-ensemble analyze-gpu report

perf: $(DEV_STAMP) $(MODEL_READY)  ## perf_analyzer on rtmo and each composing model; served/bare alternated, CPU per process → reports/perf
	$(PY) -m perf.perf_sweep --model-repository $(MODEL_REPOSITORY) --concurrency $(CONCURRENCY)
	$(PY) -m perf.served_vs_bare --model-repository $(MODEL_REPOSITORY) --concurrency $(RATIO_CONCURRENCY)

bench-stages: $(DEV_STAMP)  ## preprocess / decode / NMS micro-benchmarks against the CPU targets → reports/perf/stages.csv
	$(PY) -m perf.bench_stages

load: $(DEV_STAMP) $(MODEL_READY)  ## locust headless (USERS, SPAWN_RATE, DURATION), every response checked → reports/load
	$(PY) -m perf.load --model-repository $(MODEL_REPOSITORY) --users $(USERS) \
		--spawn-rate $(SPAWN_RATE) --duration $(DURATION)

analyze: $(DEV_STAMP) $(MODEL_READY)  ## model-analyzer sweep of each composing model → reports/model-analyzer/tuned_cpu.json (build with TUNED=)
	$(PY) -m perf.analyze --model-repository $(MODEL_REPOSITORY)

analyze-gpu: $(DEV_STAMP) $(MODEL_READY)  ## GPU host: model-analyzer sweep of the TensorRT flavour → reports/model-analyzer/tuned_gpu.json
	$(PY) -m perf.analyze --model-repository $(MODEL_REPOSITORY) --search gpu

analyze-ensemble: $(DEV_STAMP) $(MODEL_READY)  ## model-analyzer quick search of rtmo from the built configs (~20 min)
	$(PY) -m perf.analyze --model-repository $(MODEL_REPOSITORY) --search ensemble

report: $(DEV_STAMP)  ## regenerate reports/benchmark.md
	$(PY) -m perf.report
