# RTMO on NVIDIA's Triton: TensorRT, ONNX Runtime and Python backends, GPU.
#
# It serves a repository built for the GPU model it runs on (README, "Production on a GPU"), mounted
# at /models or given as an s3:// / gs:// URL in place of /models. From the checkout:
#   docker build -f deploy/docker/gpu.Dockerfile -t rtmo-triton:gpu .
#   docker run --gpus all --shm-size=512m -p 8000-8003:8000-8003 -v "$PWD/model_repository:/models" rtmo-triton:gpu
# 8000 HTTP, 8001 gRPC, 8002 metrics, 8003 health (/ready, /live). --shm-size: the Python models
# peaked at 126 MiB of shared memory at batch 8 on an H200, 300 MiB with 8 preprocess and 6 decode
# instances (README, "Shared memory").
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${TRITON_IMAGE}

# rtmo-serve and its health guard use the standard library only: the package goes in without its
# dependencies, the models bring their own.
COPY pyproject.toml /opt/rtmo-triton/
COPY rtmo_triton /opt/rtmo-triton/rtmo_triton
RUN python3 -m pip install --no-cache-dir --no-deps /opt/rtmo-triton && rm -rf /opt/rtmo-triton

EXPOSE 8000 8001 8002 8003
ENTRYPOINT ["rtmo-serve", "--host", "0.0.0.0", "--model-repository", "/models"]
