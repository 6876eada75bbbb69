"""The served ensemble with the torch engine flavour, on PyPI's tritonserver (a GPU build), under load.

The server is pytriton's binary (the installed wheel, or the trimmed copy ``gpu_bundle`` packs for a
host without it), started so that its Python models run the interpreter of this process: the stub
finds that interpreter by looking ``python3`` up on ``PATH`` (its venv's packages come with it;
``PYTHONPATH`` does not reach the stub). The repository is built here with ``--pythons none``: every
model uses this interpreter's packages, PyTorch included, except the wheels the bundle has every
model carry ahead of them (numpy 1 on hosts whose numpy 2 Triton 2.51's stub cannot use).

Measured per concurrency level, with real JPEGs over gRPC: images/s, request latency, the engine's
mean batch and each model's queue and compute time per request (from Triton's metrics), and the
Python backend's shared memory: each model instance's region in /dev/shm grows to the largest
request it has carried and never shrinks, so its size after a max-batch phase is its peak; their sum
is what a container's ``--shm-size`` must hold.
"""
from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import psutil

from perf import processes, triton_metrics
from perf.inputs import FIXTURES, SAMPLE_IMAGE
from rtmo_triton import spec
from rtmo_triton.serve.local import TritonServer
from rtmo_triton.serve.tritonserver import PYTRITON_LIBS, STUB, scrubbed_env
from rtmo_triton.served.bundle import PACKAGES_DIR, archive_name, running_python

METRICS = ("nv_inference_count", "nv_inference_exec_count", "nv_inference_request_success",
           "nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us",
           spec.HOST_DECODES_METRIC)


class ServedError(RuntimeError):
    pass


def installed_root() -> Path | None:
    """pytriton's tritonserver folder in this interpreter, with the stub for this Python put in place."""
    from rtmo_triton.serve.tritonserver import prepare, pytriton_root

    root = pytriton_root()
    if root is not None:
        prepare(root)
    return root


def launch(root: Path) -> tuple[list[str], dict[str, str]]:
    """argv prefix and environment of pytriton's server at ``root`` (``.../pytriton/tritonserver``)."""
    stub = root / "backends" / "python" / STUB
    if not stub.exists():
        raise ServedError(f"{stub} is missing: the server has no Python backend stub for this interpreter")
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ldlib = sysconfig.get_config_var("LDLIBRARY") or ""
    python_lib = f"libpython{sys.version_info.major}.{sys.version_info.minor}.so.1.0"
    if not any(Path(d, python_lib).exists() for d in (libdir, "/usr/lib/x86_64-linux-gnu", "/usr/lib64",
                                                         "/usr/lib")):
        raise ServedError(f"the stub needs {python_lib}, which this host lacks (LIBDIR {libdir}, "
                          f"LDLIBRARY {ldlib}): install the interpreter's shared library "
                          f"(libpython{sys.version_info.major}.{sys.version_info.minor} / python3-dev)")
    env = scrubbed_env(root.parents[1] / PYTRITON_LIBS)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # the host's interpreter, which has torch
    if libdir:
        env["LD_LIBRARY_PATH"] += f":{libdir}"
    argv = [str(root / "bin" / "tritonserver"), f"--backend-directory={root / 'backends'}"]
    return argv, env


def build_repository(repo: Path, *, checkpoint: Path | None, max_batch: int, carried: list[Path],
                     preprocess: str, jpeg_decoder: str, benchmark: bool = False, tuned: Path | None = None,
                     log=print) -> None:
    """Torch flavour, the packages of this interpreter (``carried`` wheels ahead of them); a busy server
    must queue, not refuse (load test)."""
    from rtmo_triton.build import repository
    from rtmo_triton.build.packages import archive_of_wheels

    args = ["--model-repository", str(repo), "--engine", "torch", "--pythons", "none",
            "--max-batch", str(max_batch), "--max-queue", "0", "--workspace", str(repo.parent / "ws"),
            "--preprocess", preprocess]
    if preprocess == "gpu":
        args += ["--jpeg-decoder", jpeg_decoder]
    if benchmark:
        args += ["--benchmark-weights", "--calibration-images", str(FIXTURES / "images"), str(SAMPLE_IMAGE)]
    if checkpoint is not None:
        args += ["--checkpoint", str(checkpoint)]
    if tuned is not None:
        args += ["--tuned", str(tuned)]
    code = repository.main(args)
    if code != 0:
        raise ServedError(f"make build-engines failed ({code})")
    if carried:
        archive = archive_of_wheels(carried, repo.parent / "carried" / archive_name(running_python()))
        for version_dir in sorted(p.parent for p in repo.glob(f"*/{spec.MODEL_VERSION}/model.py")):
            (version_dir / PACKAGES_DIR).mkdir(exist_ok=True)
            shutil.copyfile(archive, version_dir / PACKAGES_DIR / archive.name)
        log(f"[served] every Python model carries {', '.join(w.name for w in carried)}")


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def host_cpu_jiffies() -> tuple[int, int]:
    """(busy, total) time of all CPUs since boot, from ``/proc/stat``: whether the host's cores, rather
    than the GPU, were what a load level ran out of."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text()
                                                                .split("\n", 1)[0].split()[1:9])
    total = user + nice + system + idle + iowait + irq + softirq + steal  # guest time is inside user
    return total - idle - iowait, total


def cores_used(before: tuple[int, int], after: tuple[int, int], cpus: int) -> float:
    """How many of ``cpus`` cores were busy on average between two ``host_cpu_jiffies`` readings."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return busy / total * cpus if total > 0 else 0.0


def read_metrics(url: str) -> dict[tuple[str, str], float]:
    """(metric, model) → value of the counters in ``METRICS``."""
    return triton_metrics.by_model(triton_metrics.scrape(url), METRICS)


def model_stats(before: dict, after: dict) -> dict[str, dict[str, float | None]]:
    """Per model over an interval: mean batch per execution, queue and compute ms per request; for the GPU
    preprocess also the share of its images decoded on the host (a GPU decoder that refuses everything
    shows here, not as an error)."""
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    out = {}
    for model in sorted({m for _, m in d}):
        count, execs = d.get(("nv_inference_count", model), 0), d.get(("nv_inference_exec_count", model), 0)
        requests = d.get(("nv_inference_request_success", model), 0)

        def per_request_ms(metric: str, model: str = model, requests: float = requests) -> float | None:
            return d.get((metric, model), 0) / requests / 1e3 if requests else None

        out[model] = {"mean_batch": count / execs if execs else None,
                      "queue_ms": per_request_ms("nv_inference_queue_duration_us"),
                      "compute_ms": per_request_ms("nv_inference_compute_infer_duration_us")}
        if (spec.HOST_DECODES_METRIC, model) in d and count:
            out[model]["host_decodes_per_image"] = d[spec.HOST_DECODES_METRIC, model] / count
    return out


def stub_regions(server_pid: int) -> dict[str, list[str]]:
    """Model name → shared-memory region names of that server's Python stubs (a stub's second
    argument, after its model.py)."""
    regions: dict[str, list[str]] = defaultdict(list)
    for proc in processes.tree(server_pid):
        model = processes.stub_model(proc)
        try:
            if model is not None:
                regions[model].append(proc.cmdline()[2])
        except psutil.Error:
            continue  # exited while we looked
    return dict(regions)


def shm_sizes(server_pid: int) -> dict[str, int]:
    """Bytes of /dev/shm held per model (all its instances' regions)."""
    sizes = {}
    for model, names in stub_regions(server_pid).items():
        sizes[model] = sum(os.stat(f"/dev/shm/{n}").st_size for n in names if os.path.exists(f"/dev/shm/{n}"))
    return sizes


def _latency(outcomes) -> dict[str, float]:
    ms = np.array([o.latency_ms for o in outcomes if o.error is None])
    if not ms.size:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan")}
    return {q: float(np.percentile(ms, int(q[1:]))) for q in ("p50", "p90", "p99")}


def serve_and_load(*, root: Path, work: Path, images: list[bytes], carried: list[Path],
                   checkpoint: Path | None, max_batch: int, concurrencies: tuple[int, ...], level_s: float,
                   preprocess: str, jpeg_decoder: str = spec.DEFAULT_JPEG_DECODER, benchmark: bool = False,
                   lone: dict[str, list[bytes]] | None = None, tuned: Path | None = None, log=print) -> dict:
    """Build, start, warm up, then one load level per concurrency, a lone request's latency per image
    size of ``lone`` (size → JPEGs), and a max-batch phase."""
    from rtmo_triton.build.configs import load_scheduling
    from rtmo_triton.client.transport import connect

    repo = work / "repo"
    t0 = time.perf_counter()
    build_repository(repo, checkpoint=checkpoint, max_batch=max_batch, carried=carried, tuned=tuned,
                     preprocess=preprocess, jpeg_decoder=jpeg_decoder, benchmark=benchmark, log=log)
    result: dict = {"build_s": round(time.perf_counter() - t0, 1), "max_batch": max_batch,
                    "preprocess": preprocess, "jpeg_decoder": jpeg_decoder if preprocess == "gpu" else None,
                    "weights": "fixture checkpoint" if checkpoint else "benchmark" if benchmark else "random",
                    "images": len(images), "levels": [], "tuned": str(tuned) if tuned else None,
                    "instances": {m: s.instances for m, s in load_scheduling(tuned).items()}}
    form = f"{preprocess} preprocess" + (f" ({jpeg_decoder})" if preprocess == "gpu" else "")
    log_path = work / "tritonserver.log"
    gpu = [spec.cuda_pool_flag(0)] if torch_cuda() else []
    result["server_flags"] = gpu
    with TritonServer(repo, log_path=log_path, launch=launch(root), ready_timeout_s=150,
                      extra_args=gpu) as server:
        result["start_s"] = round(server.start_seconds, 1)
        for key, model in (("engine", spec.ENGINE_NAME), ("preprocess_log", spec.PREPROCESS_NAME)):
            said = f"{model}: "  # what each model logs at load: its device, and the preprocess's decoder
            result[key] = sorted({ln.split(said, 1)[1].rstrip('"') for ln in server.log_text().splitlines()
                                  if said in ln})
        log(f"[served] ready in {result['start_s']} s: {result['engine']}; {result['preprocess_log']}")
        client = connect(server.grpc_url, "grpc")  # refusals are measured, not hidden
        try:
            def batch(n: int) -> list[bytes]:
                return [images[i % len(images)] for i in range(n)]

            for n in range(1, max_batch + 1):  # every batch size once through the ensemble
                [warm] = client.infer([batch(n)])
                if warm.error is not None:  # nothing to measure: say why at once
                    raise ServedError(f"a request of {n} image(s) failed: {warm.error}")
            rate = None
            for c in concurrencies:
                n = max(4 * c, int(level_s * rate * 1.5)) if rate else 4 * c
                requests = [[images[i % len(images)]] for i in range(n)]
                before = read_metrics(server.metrics_url)
                host0, own0 = host_cpu_jiffies(), os.times()
                start = time.perf_counter()
                outcomes = client.infer(requests, concurrency=c)
                wall = time.perf_counter() - start
                host1, own1 = host_cpu_jiffies(), os.times()
                stats = model_stats(before, read_metrics(server.metrics_url))
                ok = sum(o.error is None for o in outcomes)
                rate = ok / wall
                errors = sorted({str(o.error)[:200] for o in outcomes if o.error is not None})
                level = {"concurrency": c, "requests": n, "ok": ok, "errors": errors[:3],
                         "images_per_s": rate, "latency_ms": _latency(outcomes), "models": stats,
                         "host_cores_busy": cores_used(host0, host1, os.cpu_count() or 1),
                         "client_cores": processes.own_cpu_seconds(own0, own1) / wall}
                result["levels"].append(level)
                log(f"[served] {form}, concurrency {c}: {rate:.1f} images/s, "
                    f"p50 {level['latency_ms']['p50']:.1f} ms, "
                    f"engine batch {stats.get(spec.ENGINE_NAME, {}).get('mean_batch')}, {n - ok} errors")
            result["lone_request_ms"] = {}
            for size, jpegs in (lone or {}).items():  # one request in flight: the latency a user sees alone
                outcomes = client.infer([[j] for j in jpegs * 4])
                result["lone_request_ms"][size] = _latency(outcomes)
                log(f"[served] {form}, lone {size} request: p50 "
                    f"{result['lone_request_ms'][size]['p50']:.1f} ms")
            # the largest request, from as many clients as there are instances of a model: shm peaks
            full = [batch(max_batch)] * 8
            outcomes = client.infer(full, concurrency=4)
            result["max_batch_phase"] = {"requests": len(full), "ok": sum(o.error is None for o in outcomes),
                                         "latency_ms": _latency(outcomes)}
        finally:
            client.close()
        shm = shm_sizes(server.process.pid)
        result["shm_bytes_per_model"] = shm
        result["shm_bytes_total"] = sum(shm.values())
        result["shm_regions"] = {m: len(r) for m, r in stub_regions(server.process.pid).items()}
        log(f"[served] /dev/shm per model after the max-batch phase: {shm}")
    return result
