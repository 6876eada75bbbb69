# RTMO on CPU: the Triton 2.51 server of PyPI's nvidia-pytriton (Python backend only), serving a
# repository built with ENGINE=onnx (the engine runs onnxruntime inside a Python model). The same
# server and repository that `make test` checks on CPU. From the checkout:
#   docker build -f deploy/docker/cpu.Dockerfile -t rtmo-triton:cpu .
#   docker run --shm-size=512m -p 8000-8003:8000-8003 -v "$PWD/model_repository:/models" rtmo-triton:cpu
# --shm-size: the three Python models peaked at 162 MiB of shared memory at batch 8 (README).
FROM python:3.11-slim-bookworm

# only the server binary is used from nvidia-pytriton; its Python side and dependencies are not
RUN python -m pip install --no-cache-dir --no-deps nvidia-pytriton==0.7.0
COPY pyproject.toml /opt/rtmo-triton/
COPY rtmo_triton /opt/rtmo-triton/rtmo_triton
RUN python -m pip install --no-cache-dir --no-deps /opt/rtmo-triton && rm -rf /opt/rtmo-triton \
    && python -c "from rtmo_triton.serve.tritonserver import install; install()"

EXPOSE 8000 8001 8002 8003
ENTRYPOINT ["rtmo-serve", "--host", "0.0.0.0", "--model-repository", "/models"]
