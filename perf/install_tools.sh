#!/usr/bin/env bash
# Benchmark tools, each in its own place under .tools/ (git-ignored), so their pins never
# touch the project's .venv:
#   .tools/bin/perf_analyzer   the binary of the tritonclient==2.51.0 wheel (same version as the
#                              CPU server), with the two shared libraries it needs
#   .tools/model-analyzer/     a venv with triton-model-analyzer
#   .tools/bin/locust          a venv with locust
# Idempotent: what is installed already is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=$PWD/.tools
PYTHON=${PYTHON:-python3}
PA_VERSION=2.51.0
MA_VERSION=1.58.0
LOCUST_VERSION=2.47.0
mkdir -p "$TOOLS/bin" "$TOOLS/lib"

libs=$(.venv/bin/python -c "import pathlib, pytriton; print(pathlib.Path(pytriton.__file__).parents[1] / 'nvidia_pytriton.libs')")

if [ ! -x "$TOOLS/perf_analyzer/bin/perf_analyzer" ]; then
  echo "[tools] perf_analyzer from tritonclient==$PA_VERSION"
  rm -rf "$TOOLS/perf_analyzer"
  .venv/bin/python -m pip install -q --no-deps --target "$TOOLS/perf_analyzer" "tritonclient==$PA_VERSION"
fi
# perf_analyzer links libb64.so.0d and libcudart.so.12; the pytriton wheel carries both under
# hashed names, so link them under the names the binary asks for. Without them: libb64 from
# Debian's libb64-0d (.deb unpacked here, no root needed), libcudart from PyPI.
b64=$(ls "$libs"/libb64-*.so.0d 2>/dev/null | head -n1 || true)
if [ -z "$b64" ] && [ ! -e "$TOOLS/deb/usr/lib/x86_64-linux-gnu/libb64.so.0d" ]; then
  echo "[tools] libb64-0d from apt (apt-get download, unpacked into $TOOLS/deb)"
  (cd "$TOOLS" && apt-get download libb64-0d && dpkg-deb -x libb64-0d_*.deb deb && rm libb64-0d_*.deb)
fi
ln -sf "${b64:-$TOOLS/deb/usr/lib/x86_64-linux-gnu/libb64.so.0d}" "$TOOLS/lib/libb64.so.0d"
cudart=$(ls "$libs"/libcudart-*.so.12* 2>/dev/null | head -n1 || true)
if [ -z "$cudart" ]; then
  [ -d "$TOOLS/cudart" ] || { echo "[tools] nvidia-cuda-runtime-cu12 from PyPI"
    .venv/bin/python -m pip install -q --no-deps --target "$TOOLS/cudart" "nvidia-cuda-runtime-cu12>=12,<13"; }
  cudart=$(ls "$TOOLS"/cudart/nvidia/cuda_runtime/lib/libcudart.so.12* | head -n1)
fi
ln -sf "$cudart" "$TOOLS/lib/libcudart.so.12"
cat > "$TOOLS/bin/perf_analyzer" <<WRAP
#!/usr/bin/env bash
export LD_LIBRARY_PATH="$TOOLS/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$TOOLS/perf_analyzer/bin/perf_analyzer" "\$@"
WRAP
chmod +x "$TOOLS/bin/perf_analyzer"
usage=$("$TOOLS/bin/perf_analyzer" 2>&1 || true)
grep -q "Usage" <<<"$usage" || { echo "[tools] perf_analyzer does not run: $usage" >&2; exit 1; }

if [ ! -x "$TOOLS/model-analyzer/bin/model-analyzer" ]; then
  echo "[tools] triton-model-analyzer==$MA_VERSION"
  "$PYTHON" -m venv "$TOOLS/model-analyzer"
  "$TOOLS/model-analyzer/bin/python" -m pip install -q "triton-model-analyzer==$MA_VERSION"
fi

if [ ! -x "$TOOLS/locust/bin/locust" ]; then
  echo "[tools] locust==$LOCUST_VERSION"
  "$PYTHON" -m venv "$TOOLS/locust"
  # the locustfile's users send with our client library (HTTP and gRPC) and check the contract
  "$TOOLS/locust/bin/python" -m pip install -q "locust==$LOCUST_VERSION" "tritonclient[http,grpc]" -e .
fi
ln -sf "$TOOLS/locust/bin/locust" "$TOOLS/bin/locust"
ln -sf "$TOOLS/model-analyzer/bin/model-analyzer" "$TOOLS/bin/model-analyzer"
echo "[tools] ready in $TOOLS/bin: $(ls "$TOOLS/bin" | tr '\n' ' ')"
