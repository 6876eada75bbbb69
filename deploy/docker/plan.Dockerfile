# Builds the model repository with a TensorRT plan, inside NVIDIA's TensorRT container of the same
# release as the serving image (TensorRT 10.5's Python module and trtexec, no extra package index).
# Run it on a host with the GPU model you serve on: a plan only loads on the GPU architecture and
# TensorRT version that built it.
#   docker build -f deploy/docker/plan.Dockerfile -t rtmo-triton:plan .
#   docker run --rm --gpus all -v "$PWD:/work" rtmo-triton:plan CHECKPOINT=/work/rtmo-l.pth \
#       MODEL_REPOSITORY=/work/model_repository
ARG TENSORRT_IMAGE=nvcr.io/nvidia/tensorrt:24.10-py3
FROM ${TENSORRT_IMAGE}

WORKDIR /opt/rtmo-triton
COPY . .
# `make setup` gives the virtualenv the system's TensorRT module (--system-site-packages) and takes
# torch from the CPU wheel index: the export runs on the CPU, the plan build on the GPU.
RUN make setup
ENTRYPOINT ["make", "build-engines", "ENGINE=trt", "PRECISION=fp16"]
