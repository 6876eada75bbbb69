# RTMO on Triton. `make help` lists the targets.
# Defaults of the build (K, thresholds, max batch) live in rtmo_triton/spec.py;
# a variable below reaches the build only when you set it.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_REPOSITORY ?= model_repository
CHECKPOINT ?=
BENCHMARK ?=
# the photos BENCHMARK=1 calibrates its people count on
CALIBRATION ?= tests/fixtures/images samples
TOPK ?=
SCORE_THR ?=
NMS_THR ?=
MAX_BATCH ?=
MAX_PIXELS ?=
MAX_QUEUE ?=
TUNED ?=
PYTHONS ?=
ENGINE_THREADS ?=
ENGINE ?=
PREPROCESS ?=
JPEG_DECODER ?=
PRECISION ?=
OUT ?= out
TRITONSERVER ?=
SETUP_STAMP := $(VENV)/.setup-done
DEV_STAMP := $(VENV)/.setup-dev-done
EVAL_STAMP := $(VENV)/.setup-eval-done
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# NVIDIA's TensorRT container has TensorRT's Python module in its system interpreter: let the venv see it.
VENV_FLAGS ?= $(shell $(PYTHON) -c "import tensorrt" >/dev/null 2>&1 && echo --system-site-packages)

BUILD_FLAGS = --model-repository $(MODEL_REPOSITORY) $(if $(ENGINE),--engine $(ENGINE)) \
	$(if $(PREPROCESS),--preprocess $(PREPROCESS)) $(if $(JPEG_DECODER),--jpeg-decoder $(JPEG_DECODER)) \
	$(if $(PRECISION),--precision $(PRECISION)) \
	$(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) $(if $(BENCHMARK),--benchmark-weights --calibration-images $(CALIBRATION)) \
	$(if $(TOPK),--topk $(TOPK)) \
	$(if $(SCORE_THR),--score-thr $(SCORE_THR)) $(if $(NMS_THR),--nms-thr $(NMS_THR)) \
	$(if $(MAX_BATCH),--max-batch $(MAX_BATCH)) $(if $(MAX_PIXELS),--max-pixels $(MAX_PIXELS)) \
	$(if $(ENGINE_THREADS),--engine-threads $(ENGINE_THREADS)) $(if $(MAX_QUEUE),--max-queue $(MAX_QUEUE)) \
	$(if $(TUNED),--tuned $(TUNED)) $(if $(PYTHONS),--pythons "$(PYTHONS)")

.PHONY: help setup setup-dev build-engines serve test test-fast lint demo eval soak overload clean

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18

setup: $(SETUP_STAMP)  ## .venv to build, serve and query: torch (CPU), the package, tritonclient, a CPU tritonserver
$(SETUP_STAMP): pyproject.toml
	@# NVIDIA's containers may lack python3-venv: fall back to virtualenv from PyPI
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV) 2>/dev/null || \
		{ $(PYTHON) -m pip install -q virtualenv && $(PYTHON) -m virtualenv -q $(VENV_FLAGS) $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	@# the CPU build of torch (it only loads checkpoints and exports ONNX): no GBs of CUDA libraries;
	@# the index is asked only where it answers (a host without it installs from its own mirror)
	$(PY) -m pip install -q torch==2.13.0 $$($(PY) -c "import urllib.request as r; r.urlopen('$(TORCH_INDEX)/', \
		timeout=10)" >/dev/null 2>&1 && echo --extra-index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[build,client]' nvidia-pytriton==0.7.0
	$(PY) -c "from rtmo_triton.serve.tritonserver import install; install()"
	@touch $@
	@echo "setup done: $(VENV)/bin/rtmo-tritonserver --help"

setup-dev: $(DEV_STAMP)  ## setup, plus what tests, lint and benchmarks use: dev extras, perf_analyzer, model-analyzer, locust, kubectl
$(DEV_STAMP): $(SETUP_STAMP)
	$(PY) -m pip install -q -e '.[build,client,eval,dev]'
	bash perf/install_tools.sh
	@bash deploy/install_tools.sh kubectl || echo "setup-dev: no kubectl, tests/test_k8s.py will skip (and fail in CI)"
	@touch $@

$(EVAL_STAMP): $(SETUP_STAMP)
	$(PY) -m pip install -q -e '.[client,eval]'
	@touch $@

build-engines: $(SETUP_STAMP)  ## fill MODEL_REPOSITORY from CHECKPOINT (random RTMO-s without one; BENCHMARK=1: its benchmark form)
	$(PY) -m rtmo_triton.build $(BUILD_FLAGS)

$(MODEL_REPOSITORY)/rtmo/config.pbtxt:
	$(MAKE) build-engines

SERVE_FLAGS ?=
# rtmo-serve picks the server itself (NVIDIA's, else PyPI's); TRITONSERVER=path overrides it.
serve: $(SETUP_STAMP) $(MODEL_REPOSITORY)/rtmo/config.pbtxt  ## rtmo-serve, any engine flavour, on 127.0.0.1 (HTTP 8000, gRPC 8001, metrics 8002, health 8003); SERVE_FLAGS=
	$(if $(TRITONSERVER),TRITONSERVER='$(TRITONSERVER)') \
		$(VENV)/bin/rtmo-serve --model-repository $(MODEL_REPOSITORY) $(SERVE_FLAGS)

lint: $(DEV_STAMP)  ## ruff
	$(VENV)/bin/ruff check .

test: $(DEV_STAMP) lint  ## ruff, then every test (a real tritonserver included), CPU only
	$(PY) -m pytest -q -ra

test-fast: $(DEV_STAMP)  ## the tests that start no tritonserver (pytest -m "not server"); one that does fails
	RTMO_TEST_FAST=1 $(PY) -m pytest -q -ra -m "not server"

demo: $(SETUP_STAMP)  ## build the default model, serve it, run the client on samples/, stop
	$(PY) clients/demo.py --model-repository $(MODEL_REPOSITORY) --out-dir $(OUT)/demo samples

eval: $(EVAL_STAMP)  ## keypoint AP through a running server: ANN=annotations.json IMAGES=dir [URL= PROTOCOL=]
	$(if $(and $(ANN),$(IMAGES)),,$(error make eval needs ANN=<COCO keypoint json> IMAGES=<image folder>))
	$(VENV)/bin/rtmo-eval --ann $(ANN) --images $(IMAGES) \
		--out $(OUT)/eval/$(basename $(notdir $(ANN))).results.json \
		$(if $(URL),--url $(URL)) $(if $(PROTOCOL),--protocol $(PROTOCOL))

.PHONY: bench-video
bench-video: $(DEV_STAMP) $(MODEL_REPOSITORY)/rtmo/config.pbtxt  ## rtmo-video frames/s at 720p/1080p, pipelined vs one frame at a time
	$(PY) -m perf.video_bench --model-repository $(MODEL_REPOSITORY)

.PHONY: rehearse-scale
rehearse-scale: $(DEV_STAMP) $(MODEL_REPOSITORY)/rtmo/config.pbtxt  ## 3 replicas behind HAProxy under locust; one killed, all restarted → reports/scale
	bash deploy/install_tools.sh rehearse
	$(PY) -m perf.scale --model-repository $(MODEL_REPOSITORY)

SOAK_MINUTES ?= 30
soak: $(DEV_STAMP) $(MODEL_REPOSITORY)/rtmo/config.pbtxt  ## SOAK_MINUTES of mixed image sizes: failures, latency and RSS over time (reports/soak/)
	$(PY) -m perf.soak --model-repository $(MODEL_REPOSITORY) --minutes $(SOAK_MINUTES)

overload: $(DEV_STAMP) $(MODEL_REPOSITORY)/rtmo/config.pbtxt  ## accepted latency and busy refusals at 1x/2x/4x the sustainable concurrency
	$(PY) -m perf.overload --model-repository $(MODEL_REPOSITORY)

.PHONY: gpu-check gpu-check-prepare gpu-check-rehearse
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
BUNDLE ?=
gpu-check:  ## GPU host: torch numerics, engine ceiling, served ensemble → reports/gpu/ (docs/gpu.md); DRY=1: CPU rehearsal
	$(GPU_PY) -m perf.gpu.check $(if $(DRY),--dry-run) $(if $(BUNDLE),--bundle $(BUNDLE))

gpu-check-prepare: $(DEV_STAMP)  ## pack what an offline GPU host lacks (server, wheels) into .gpu-check/ for device calls
	$(PY) -m perf.gpu.bundle --out .gpu-check

# The GPU hosts' packages (the device library's KINDS.md), where PyPI has them for this machine's Python:
# numpy 2.5 needs 3.12, so 2.4; PyPI's torch 2.11 is the CUDA build (about 3 GB with its libraries).
HOST_PACKAGES ?= torch==2.11.0 torchvision==0.26.0 numpy==2.4.6 onnxruntime==1.30.0 onnx==1.23.1 \
	opencv-python-headless pillow packaging grpcio psutil pyyaml prometheus-client
REHEARSAL ?= /tmp/rtmo-gpu-rehearsal
gpu-check-rehearse: $(DEV_STAMP)  ## CPU dry run of the GPU check in the GPU hosts' packages, offline from a bundle (docs/gpu.md)
	test -x $(REHEARSAL)/venv/bin/python3 || $(PYTHON) -m venv $(REHEARSAL)/venv
	$(REHEARSAL)/venv/bin/pip install -q $(HOST_PACKAGES)
	$(PY) -m perf.gpu.bundle --out $(REHEARSAL)/bundle \
		--python $$($(REHEARSAL)/venv/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
	PATH=$(REHEARSAL)/venv/bin:$$PATH python3 -m perf.gpu.check --dry-run \
		--bundle $(REHEARSAL)/bundle/packed --out reports/tmp/gpu-rehearsal --work $(REHEARSAL)/work

clean:  ## remove the built repository's models and out/ (keeps .venv and build/'s packed packages)
	rm -rf $(OUT) $(wildcard $(MODEL_REPOSITORY)/*/)

-include perf/perf.mk
