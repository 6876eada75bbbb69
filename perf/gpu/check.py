"""``make gpu-check``: one command that answers what the GPU path does, on the GPU host it runs on.

Sections, each written to ``gpu_check.json`` and ``gpu_check.md`` as soon as it is done (a run cut
short keeps what it finished), each failing alone:

1. numerics: torch on the device in FP32 (TF32 off), TF32, FP16 whole network and FP16 with the
   box decoding and the DCC's bin code in FP32 (what is served), against the CPU FP32 ONNX path
   through the served decoder: people found/missed/extra, keypoint and box deltas, NaN/inf. On the
   fixture images with the RTMO-t fixture checkpoint, and with random RTMO-s/m/l weights;
2. dcc_probe: the same candidates' keypoints with the bin code in FP16 vs FP32, box sizes 100-800 px;
3. ceiling: the deploy graph alone, RTMO-s/m/l FP16 channels-last, eager and CUDA graphs, batch 1/8/32;
4. copies: host↔device time of the engine's input and outputs;
5. jpeg: the GPU-resident stages on the device (``gpu.jpeg``): for each batched JPEG decoder
   (torchvision's nvJPEG, nvImageCodec) its pixels and what they do to people against libjpeg-turbo's,
   decode throughput and host CPU per image, and the corruption test; the letterbox and
   decoder against their CPU forms;
6. served: the ensemble with the torch flavour on the GPU in pytriton's tritonserver, once per form
   (the GPU-resident stages with each ``--jpeg-decoder``, then the CPU ones, side by side), gRPC load
   at each concurrency with real JPEGs, the engine's mean batch, host CPU per image, the share of
   images decoded on the host, and the Python backend's /dev/shm.

Without a CUDA device it says so and exits 2; ``--dry-run`` runs every section on the CPU at tiny
sizes (CI runs it, so the script cannot rot); ``--cpu`` runs the chosen sections on the CPU at full
size (PyTorch's FP16 CPU kernels: what FP16 rounding does, never a GPU figure). ``--bundle`` takes
what ``make gpu-check-prepare`` packs (``.gpu-check/packed``, or its parts gathered on the host): the
server and the wheels an offline host lacks.
Exit status 0: every section ran; 1: some failed (each says why in the report).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

from perf.inputs import FIXTURES
from perf.tables import head, row
from rtmo_triton import spec
from rtmo_triton.build.flavour import PREPROCESS_PLACES

CHECKPOINT_T = FIXTURES / "rtmo-t" / "rtmo-t_random_seed0.pth"
DEFAULT_OUT = Path("reports/gpu")
DRY_OUT = Path("reports/tmp/gpu-dry-run")
PAPER_V100_ONNXRUNTIME_MS = {"s": 8.9, "m": 12.4, "l": 19.1}
"""RTMO paper: latency per image on a V100 with ONNX Runtime, the anchors to compare against."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m perf.gpu.check",
                                description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, help=f"report folder (default {DEFAULT_OUT}; dry run: {DRY_OUT})")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: rehearse every section")
    p.add_argument("--cpu", action="store_true", help="measure on the CPU at full size (no GPU figure)")
    p.add_argument("--bundle", type=Path, help="folder made by `make gpu-check-prepare` (offline GPU hosts)")
    p.add_argument("--work", type=Path, default=Path("/tmp/rtmo-gpu-check"), help="scratch folder")
    p.add_argument("--sections", default="jpeg,ceiling,served,numerics,dcc_probe,copies",
                   help="in this order; the GPU-resident path's first (default: %(default)s)")
    p.add_argument("--served-weights", choices=("benchmark", "random"), default="benchmark",
                   help="served: random RTMO-s calibrated for a realistic people count (make "
                        "build-engines BENCHMARK=1), or plain random weights, which pass every candidate "
                        "(default: %(default)s)")
    p.add_argument("--preprocess", default=None,
                   help="served: the preprocess forms measured, in order (default gpu,cpu; dry run: gpu)")
    p.add_argument("--jpeg-decoder", default=None,
                   help="served: the GPU preprocess's JPEG decoders (`make build-engines JPEG_DECODER=`), "
                        f"each served as its own form (default {','.join(spec.JPEG_DECODERS)}; dry run: "
                        f"{spec.DEFAULT_JPEG_DECODER})")
    p.add_argument("--variants", default=None, help="random-weight variants (default s,m,l; dry run: none)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile in the ceiling (slow)")
    p.add_argument("--precision", choices=spec.PRECISIONS, default=spec.DEFAULT_PRECISION,
                   help="the ceiling's network on CUDA (fp32: TF32 off; on the CPU always fp32)")
    p.add_argument("--label", default="", help="what is being measured, e.g. the commit")
    p.add_argument("--tuned", type=Path, default=None,
                   help="served: a tuned file (instances, batching per model) as `make build-engines TUNED=`")
    p.add_argument("--concurrencies", default=None,
                   help="served: requests in flight per load level (default 1,4,16,64,256; dry run: 1,2)")
    p.add_argument("--deadline-s", type=float, default=0,
                   help="start no section after this many seconds (0: no limit); the report keeps what ran")
    args = p.parse_args(argv)
    args.out = args.out or (DRY_OUT if args.dry_run else DEFAULT_OUT)
    if args.variants is None:
        args.variants = "" if args.dry_run else "s,m,l"
    args.variants = [v for v in args.variants.split(",") if v]
    args.sections = [s for s in args.sections.split(",") if s]
    args.preprocess = [f for f in (args.preprocess or ("gpu" if args.dry_run else "gpu,cpu")).split(",") if f]
    if not args.preprocess or set(args.preprocess) - set(PREPROCESS_PLACES):
        p.error(f"--preprocess: gpu, cpu or both, comma-separated, not {','.join(args.preprocess)!r}")
    decoders = [d for d in (args.jpeg_decoder or (spec.DEFAULT_JPEG_DECODER if args.dry_run else
                                                  ",".join(spec.JPEG_DECODERS))).split(",") if d]
    if not decoders or set(decoders) - set(spec.JPEG_DECODERS):
        p.error(f"--jpeg-decoder: {', '.join(spec.JPEG_DECODERS)} or several, comma-separated, not "
                f"{args.jpeg_decoder!r}")
    args.forms = [ServedForm(place, d) for place in args.preprocess
                  for d in (decoders if place == "gpu" else (None,))]
    if args.tuned is not None and not args.tuned.is_file():
        p.error(f"--tuned: no such file: {args.tuned}")
    try:
        args.concurrencies = tuple(int(c) for c in (args.concurrencies or ("1,2" if args.dry_run else
                                                                           "1,4,16,64,256")).split(","))
    except ValueError:
        p.error(f"--concurrencies: comma-separated whole numbers, not {args.concurrencies!r}")
    if min(args.concurrencies) < 1:
        p.error("--concurrencies: each level needs at least one request in flight")
    return args


def past_deadline(args) -> str:
    """Why nothing more may start (``--deadline-s`` has passed since the check began), or ''."""
    if args.deadline_s and time.perf_counter() - args.started > args.deadline_s:
        return f"not started: past --deadline-s {args.deadline_s:g}"
    return ""


class ServedForm(NamedTuple):
    """One served run: where the preprocess runs and, on the GPU, its JPEG decoder."""

    preprocess: str
    jpeg_decoder: str | None

    @property
    def name(self) -> str:
        return f"{self.preprocess}-{self.jpeg_decoder}" if self.jpeg_decoder else self.preprocess


class Bundle(NamedTuple):
    server: Path | None
    """pytriton's ``tritonserver`` folder, unpacked; None where the bundle has no server archive."""
    stub_wheels: list[Path]
    """Wheels every served Python model carries (``gpu_bundle.STUB_NEEDS``)."""


def use_bundle(bundle: Path, work: Path) -> Bundle:
    """Unpack the server (once) and the wheels, install the served models' missing packages into this
    interpreter (the server's Python models run it) and put the client's wheels on this process's path.
    Must run before anything imports protobuf."""
    from .bundle import SERVER_ARCHIVE, WHEELS_ARCHIVE, unpack_wheels

    site = work / "server"
    if not (site / "pytriton").is_dir() and (bundle / SERVER_ARCHIVE).is_file():
        site.mkdir(parents=True, exist_ok=True)
        with tarfile.open(bundle / SERVER_ARCHIVE) as tar:
            tar.extractall(site, filter="data")
    wheels = unpack_wheels(bundle / WHEELS_ARCHIVE, work)
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--disable-pip-version-check"]
    for wheel in missing_here(wheels / "server"):  # one that fails to install fails its users only
        done = subprocess.run([*pip, str(wheel)], capture_output=True, text=True)
        if done.returncode:
            print(f"[bundle] {wheel.name} did not install: {done.stderr.strip()[-1500:]}", flush=True)
    client = work / "client"
    client_wheels = missing_here(wheels / "client")
    if client_wheels:
        subprocess.run([*pip, "--upgrade", "--target", str(client), *map(str, client_wheels)], check=True)
        sys.path.insert(0, str(client))
    server = site / "pytriton" / "tritonserver"
    return Bundle(server if server.is_dir() else None, sorted((wheels / "stub").glob("*.whl")))


def missing_here(folder: Path) -> list[Path]:
    """The wheels in ``folder`` this interpreter lacks, or has in an older version (a newer one here
    stays: other packages of the host, onnx's generated protobuf code say, may need it)."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    wanted = []
    for wheel in sorted(folder.glob("*.whl")):
        name, wheel_version = wheel.name.split("-")[:2]
        try:
            here = Version(version(name.replace("_", "-")))
        except PackageNotFoundError:
            here = None
        if here is None or here < Version(wheel_version):
            wanted.append(wheel)
        else:
            print(f"[bundle] {name} {here} here, not older than the bundle's {wheel_version}: kept")
    return wanted


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def environment(label: str) -> dict:
    import numpy as np
    import torch

    def version(name: str) -> str | None:
        try:
            from importlib.metadata import version as v
            return v(name)
        except Exception:  # noqa: BLE001 - absent packages are reported as such
            return None

    env = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "label": label,
        "host": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "numpy": np.__version__, "onnx": version("onnx"), "onnxruntime": version("onnxruntime"),
        "opencv": version("opencv-python-headless") or version("opencv-python"),
        "tritonclient": version("tritonclient"), "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env |= {"device": props.name, "compute_capability": f"{props.major}.{props.minor}",
                "device_memory_gib": round(props.total_memory / 2**30, 1),
                "multiprocessors": props.multi_processor_count}
    smi = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if smi:
        env["nvidia_smi"] = smi.splitlines()[0]
        env["driver"] = smi.splitlines()[0].split(",")[1].strip()
    return env


def fixture_images() -> list[Path]:
    return sorted(p for p in (FIXTURES / "images").rglob("*") if p.suffix in (".jpg", ".png"))


class Report:
    """The JSON and markdown reports, rewritten after each section."""

    def __init__(self, out: Path, env: dict, config: dict) -> None:
        self.out = out
        self.data = {"environment": env, "config": config, "sections": {}, "errors": {}, "seconds": {}}
        out.mkdir(parents=True, exist_ok=True)

    def section(self, name: str, fn, *args, **kwargs) -> None:
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            self.data["sections"][name] = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - one section failing must not lose the others
            self.failed(name, exc)
        self.data["seconds"][name] = round(time.perf_counter() - t0, 1)
        self.write()

    def partial(self, name: str, value) -> None:
        """A long section's results so far, written now: a call cut short keeps them."""
        self.data["sections"][name] = value
        self.write()

    def failed(self, name: str, exc: BaseException) -> str:
        """A section, or a part of one whose other parts go on, failed: the cause leads (what it
        answers), the traceback keeps the rest."""
        said = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:3000]
        self.data["errors"][name] = said
        self.data["errors"][name + "_traceback"] = traceback.format_exc()[-4000:]
        print(f"[{name}] FAILED: {said}", flush=True)
        return said

    def write(self) -> None:
        (self.out / "gpu_check.json").write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        (self.out / "gpu_check.md").write_text(markdown(self.data))


def _f(x, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _three(stats: dict, digits: int = 3) -> str:
    return " / ".join(_f(stats[k], digits) for k in ("p50", "p99", "max"))


def _header(env: dict, cfg: dict, seconds: dict) -> list[str]:
    device = env.get("device", "none (CPU)")
    if "device" in env:
        device += f", sm {env['compute_capability']}, {env['device_memory_gib']} GiB"
    return [f"- device: {device}",
            f"- driver: {env.get('driver', '–')} (nvidia-smi: {env.get('nvidia_smi', '–')})",
            f"- torch {env['torch']} (CUDA {env['torch_cuda']}, cuDNN {env['cudnn']}), numpy {env['numpy']}, "
            f"onnxruntime {env['onnxruntime']}, onnx {env['onnx']}, Python {env['python']}, "
            f"{env['cpus']} CPUs",
            f"- when: {env['date']}, label: {env['label'] or '–'}, command: `{cfg['command']}`",
            f"- seconds per section: {seconds}", ""]


def _numerics(results: list[dict]) -> list[str]:
    lines = ["## Numerics against the CPU FP32 ONNX path (onnxruntime), through the served decoder", "",
             "Matched people's deltas in original-image pixels (keypoints: Euclidean distance; boxes: the "
             "largest coordinate difference), p50 / p99 / max.", ""]
    lines += head(("model", "setting", "device", "people ref / found / missed / extra", "keypoint px",
                     "box px", "score max", "NaN/inf"))
    for m in results:
        for name, s in m["settings"].items():
            pp = s["people"]
            lines.append(row(m["model"], name, s["device"],
                              f"{pp['reference']} / {pp['found']} / {pp['missed']} / {pp['extra']}",
                              _three(s["keypoint_px"]), _three(s["box_px"]), _f(s["score_abs"]["max"], 4),
                              s["nonfinite_total"]))
    return [*lines, ""]


def _probe(p: dict) -> list[str]:
    lines = [f"## DCC bin code in FP16 vs FP32 ({p['candidates']} candidates of the RTMO-t fixtures, "
             f"{p['device']}; everything else FP32)", ""]
    lines += head(("box size px", "code abs max", "keypoint px p50 / p99 / max"))
    for size, r in p["box_sizes_px"].items():
        lines.append(row(size, _f(r["code_abs_max"], 4), _three(r["keypoint_px"])))
    return [*lines, ""]


def _ceiling(ceiling: dict) -> list[str]:
    results = ceiling["variants"]
    precision = ceiling["precision"].upper()
    if precision == "FP32" and ceiling["device"].startswith("cuda"):
        precision += " (TF32 off)"
    lines = [f"## Engine ceiling (deploy graph alone, {precision} on {ceiling['device']}, "
             "channels-last on CUDA; no server, no pre/post)", ""]
    lines += head(("variant", "batch", "mode", "images/s", "batch ms (mean)", "latency p50 / p99 ms",
                     "paper: V100 ONNX Runtime ms/image"))
    for variant, rows in results.items():
        paper = PAPER_V100_ONNXRUNTIME_MS.get(variant, "–")
        for batch, modes in rows.items():
            for mode, t in modes.items():
                if "error" in t:
                    lines.append(row(variant, batch, mode, f"error: {t['error'][:80]}", "", "", paper))
                else:
                    lines.append(row(variant, batch, mode, f"{t['images_per_s']:.0f}",
                                      f"{t['batch_ms_mean']:.2f}",
                                      f"{t['latency_ms_p50']:.2f} / {t['latency_ms_p99']:.2f}", paper))
    if peaks := ceiling.get("peak_reserved_mib"):
        lines += ["", "GPU memory PyTorch reserved at most per variant (weights, every batch above, their "
                      "CUDA graphs in one pool): " + ", ".join(f"RTMO-{v} {m} MiB" for v, m in peaks.items())]
    return [*lines, ""]


def _copies(results: dict) -> list[str]:
    lines = ["## Host↔device copies of the engine's input (uint8) and outputs (FP32, K=100)", ""]
    lines += head(("variant", "batch", "input MB", "output MB", "H2D pageable / pinned ms",
                     "D2H pageable / pinned ms"))
    for variant, rows in results.items():
        for batch, r in rows.items():
            pg, pn = r["pageable"], r["pinned"]
            lines.append(row(variant, batch, f"{r['input_bytes'] / 1e6:.2f}",
                              f"{r['output_bytes'] / 1e6:.2f}", f"{pg['h2d_ms']:.3f} / {pn['h2d_ms']:.3f}",
                              f"{pg['d2h_ms']:.3f} / {pn['d2h_ms']:.3f}"))
    return [*lines, ""]


def ceiling_rate(sec: dict, batch: int) -> float | None:
    """RTMO-s images/s of the engine alone (CUDA graph) at ``batch``, where the ceiling section has it."""
    row = sec.get("ceiling", {}).get("variants", {}).get(spec.DEFAULT_VARIANT, {})
    t = (row.get(str(batch)) or row.get(batch) or {}).get("cuda_graph", {})
    return t.get("images_per_s")


def _server_cpu_ms(lv: dict) -> str:
    """Host CPU per served image outside the load generator: busy cores less the client's, per image/s."""
    if "host_cores_busy" not in lv or not lv["images_per_s"]:
        return "not recorded"
    return f"{1000 * max(lv['host_cores_busy'] - lv['client_cores'], 0) / lv['images_per_s']:.2f}"


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _served(s: dict, ceiling: float | None = None) -> list[str]:
    if "forms" in s:  # one run per preprocess form
        return [line for form in s["forms"].values() for line in _served(form, ceiling)]
    form = s.get("preprocess", "cpu") + " preprocess"
    form += f", JPEGs by {s['jpeg_decoder']}" if s.get("jpeg_decoder") else ""
    if "error" in s:
        return [f"## Served ensemble, torch flavour, {form}: FAILED", "", "```", s["error"], "```", ""]
    if "skipped" in s:
        return [f"## Served ensemble, torch flavour, {form}: skipped ({s['skipped']})", ""]
    vs = f", served ÷ engine ceiling at batch {s['max_batch']} ({ceiling:.0f} images/s)" if ceiling else ""
    lines = [f"## Served ensemble, torch flavour, {form} ({'; '.join(s.get('engine', []))})", "",
             f"Repository built in {s['build_s']} s, server ready in {s.get('start_s')} s; "
             f"{s['images']} real JPEGs cycled, one image per request over gRPC, max batch "
             f"{s['max_batch']}; weights: {s.get('weights', 'random')}.", ""]
    if said := s.get("preprocess_log"):
        lines += [f"The preprocess at load: {'; '.join(said)}.", ""]
    host_decodes = any("host_decodes_per_image" in lv["models"].get(spec.PREPROCESS_NAME, {})
                       for lv in s["levels"])
    lines += head(("concurrency", "requests ok", "images/s" + (" (÷ ceiling)" if ceiling else ""),
                     "latency p50 / p90 / p99 ms", "engine mean batch", "engine queue / compute ms",
                     "host cores busy (load generator)", "server host CPU ms / image",
                     *(("images decoded on the host",) if host_decodes else ())))
    for lv in s["levels"]:
        e, pre, lat = (lv["models"].get(spec.ENGINE_NAME, {}), lv["models"].get(spec.PREPROCESS_NAME, {}),
                       lv["latency_ms"])
        cores = (f"{lv['host_cores_busy']:.1f} ({lv['client_cores']:.1f})" if "host_cores_busy" in lv
                 else "not recorded")
        rate = f"{lv['images_per_s']:.1f}" + (f" ({lv['images_per_s'] / ceiling:.0%})" if ceiling else "")
        lines.append(row(lv["concurrency"], f"{lv['ok']}/{lv['requests']}", rate,
                          f"{lat['p50']:.1f} / {lat['p90']:.1f} / {lat['p99']:.1f}", _f(e.get("mean_batch")),
                          f"{_f(e.get('queue_ms'))} / {_f(e.get('compute_ms'))}", cores, _server_cpu_ms(lv),
                          *((_share(pre.get("host_decodes_per_image")),) if host_decodes else ())))
    if vs:
        lines += ["", f"Ratios{vs}."]
    if lone := s.get("lone_request_ms"):
        lines += ["", "A lone request (one in flight), latency p50 / p99 ms: " + "; ".join(
            f"{size} {lat['p50']:.1f} / {lat['p99']:.1f}" for size, lat in lone.items())]
    models = [m for m in (spec.PREPROCESS_NAME, spec.ENGINE_NAME, spec.DECODE_NAME)
              if any(m in lv["models"] for lv in s["levels"])]
    if models:
        lines += ["", "Per composing model (its instances), at each concurrency: mean batch · queue ms · "
                  "compute ms per batch, from Triton's metrics:", ""]
        instances = s.get("instances") or s.get("shm_regions", {})  # older reports: one region per instance
        lines += head(("concurrency", *(f"{m} ({instances.get(m, '?')})" for m in models)))
        for lv in s["levels"]:
            cells = (lv["models"].get(m, {}) for m in models)
            lines.append(row(lv["concurrency"], *(f"{_f(c.get('mean_batch'))} · {_f(c.get('queue_ms'))} · "
                                                   f"{_f(c.get('compute_ms'))}" for c in cells)))
    lines += ["", "Python backend shared memory after the max-batch phase (the peak: regions never shrink):",
              ""]
    lines += head(("model", "instances", "/dev/shm MiB"))
    for model, size in s.get("shm_bytes_per_model", {}).items():
        lines.append(row(model, s["shm_regions"].get(model), f"{size / 2**20:.1f}"))
    lines.append(row("total", "", f"{s.get('shm_bytes_total', 0) / 2**20:.1f}"))
    return [*lines, ""]


def _jpeg_decoder(name: str, d: dict, libjpeg: dict[str, float]) -> list[str]:
    lines = [f"### {name}: {d['decoder']}", ""]
    if "skipped" in d or "error" in d:
        return [*lines, f"- not measured: {d.get('error') or d['skipped']}", ""]
    lines += ["JPEG pixels against libjpeg-turbo's (the CPU path), every BGR value:", ""]
    lines += head(("images", "count", "refused", "values differing", "mean abs", "p99 abs", "max abs"))
    for size, p in d["pixels"].items():
        if not p["values"]:
            lines.append(row(size, p["images"], p["refused"], "", "", "", ""))
            continue
        lines.append(row(size, p["images"], p["refused"], f"{p['differing_share']:.2%}", _f(p["mean_abs"], 3),
                         _f(p["p99_abs"], 1), p["max_abs"]))
    pp, k = d["people"]["people"], d["people"]["keypoint_px"]
    lines += ["", f"- people from its pixels against CPU-decoded ones (FP32, same weights): "
              f"{pp['reference']} / found {pp['found']} / missed {pp['missed']} / extra {pp['extra']}; "
              f"keypoints p50 / p99 / max {_three(k)} px",
              *_corruption(d["corruption"]), "",
              "Decode throughput (images/s) and the GPU preprocess's host CPU per image:", ""]
    rows = d["throughput"]
    batches = sorted({int(k.split("_")[2]) for r in rows.values() for k in r if k.startswith("decode_batch")})
    lines += head(("size", "libjpeg-turbo, one core", *(f"decode, batch {b}" for b in batches),
                   *(f"preprocess batch {b}: images/s · host CPU ms/image" for b in batches)))
    for size, r in rows.items():
        lines.append(row(size, f"{libjpeg[size]:.0f}",
                         *(f"{r[f'decode_batch_{b}_images_per_s']:.0f}" for b in batches),
                         *(f"{r[f'preprocess_batch_{b}_images_per_s']:.0f} · "
                           f"{r[f'preprocess_batch_{b}_host_cpu_ms_per_image']:.2f}" for b in batches)))
    return [*lines, ""]


def _corruption(c: dict[str, dict]) -> list[str]:
    """The corruption test with the served stream wait and without it, and what the pair shows."""
    if any("error" in t for t in c.values()):
        return [f"- corruption test: {v} FAILED ({t['error']})" for v, t in c.items() if "error" in t]
    waited, control = c["drained"], c["undrained"]
    if waited["refused_images"] == waited["batch"]:
        return ["- corruption test: not run, the decoder refused every image"]
    if waited["corrupted_iterations"]:
        verdict = "**corrupted even with the stream wait**"
    elif control["corrupted_iterations"]:
        verdict = "the hazard is real on this host, and the stream wait prevents it"
    elif not control["reused_iterations"]:
        verdict = "inconclusive: the decoder never got a freed output's memory"
    else:
        verdict = "no hazard on this host: freed memory was reused without corruption"
    queued = _f(waited["queued_ms"], 0)
    return [f"- corruption test ({waited['iterations']} decodes of {waited['batch']} images, each right "
            f"after freeing the previous outputs while a sum of them waited behind {queued} ms of queued "
            f"work; iterations that reused freed memory / corrupted it): with the stream wait "
            f"{waited['reused_iterations']} / {waited['corrupted_iterations']}, without it "
            f"{control['reused_iterations']} / {control['corrupted_iterations']}; decodes that changed "
            f"{waited['changed_images']} / {control['changed_images']}: {verdict}"]


def _jpeg(j: dict) -> list[str]:
    dd, lb = j["device_decoder"], j["letterbox"]
    lines = ["## GPU-resident stages on the device", "",
             f"- letterbox on the device, same pixels, over {lb['images']} images: against the same warp "
             f"on CPU torch {lb['differing_from_cpu_torch']} values differ; against OpenCV {lb['opencv']}'s "
             f"warpAffine {lb['differing_values']}"
             + (f" ({lb['opencv_difference']})" if lb["opencv_difference"] else ""),
             f"- decoder on the device against numpy's: same people counts {dd['same_people_counts']}, "
             f"keypoint max {_f(dd['max_abs_keypoint_px'], 5)} px, "
             f"score max {_f(dd['max_abs_score'], 6)}", ""]
    for name, d in j["decoders"].items():
        lines += _jpeg_decoder(name, d, j["libjpeg_one_core_images_per_s"])
    return lines


def markdown(data: dict) -> str:
    env, cfg, sec = data["environment"], data["config"], data["sections"]
    dry = " — DRY RUN on the CPU (tiny sizes; no GPU figure here)" if cfg.get("dry_run") else ""
    dry = dry or (" — on the CPU (PyTorch's CPU kernels; no GPU figure here)" if cfg.get("cpu") else "")
    title = "# GPU check" + dry
    lines = [title, "", *_header(env, cfg, data["seconds"])]
    ceiling = ceiling_rate(sec, sec.get("served", {}).get("max_batch") or 8)
    for name, render in (("numerics", _numerics), ("dcc_probe", _probe), ("jpeg", _jpeg),
                         ("ceiling", _ceiling), ("copies", _copies),
                         ("served", lambda s: _served(s, ceiling))):
        if name in sec and "skipped" not in sec[name]:
            lines += render(sec[name])
        elif name in sec:
            lines += [f"## {name}: skipped ({sec[name]['skipped']})", ""]
    for name, err in data["errors"].items():
        if not name.endswith("_traceback"):
            lines += [f"## {name}: FAILED", "", "```", err, "```", ""]
    return "\n".join(lines)


def numerics_section(args, device) -> list[dict]:
    import numpy as np

    from rtmo_triton.model import load_checkpoint, random_model
    from rtmo_triton.spec import DEFAULT_NMS_THR, DEFAULT_SCORE_THR, DEFAULT_TOPK

    from .numerics import run_model

    paths = fixture_images()[:1 if args.dry_run else None]
    images = [p.read_bytes() for p in paths]
    with np.load(sorted((FIXTURES / "rtmo-t").glob("outputs_*.npz"))[0]) as ref:
        thr = float(ref["score_thr"]), float(ref["nms_thr"])
    model, _ = load_checkpoint(CHECKPOINT_T)
    results = [run_model("t (fixture checkpoint)", model, images, device, topk=DEFAULT_TOPK, score_thr=thr[0],
                         nms_thr=thr[1])]
    for variant in args.variants:
        results.append(run_model(f"{variant} (random weights)", random_model(variant), images, device,
                                 topk=DEFAULT_TOPK, score_thr=DEFAULT_SCORE_THR, nms_thr=DEFAULT_NMS_THR))
    return results


def dcc_probe_section(args, device) -> dict:
    import numpy as np

    from rtmo_triton.model import load_checkpoint

    from .numerics import dcc_probe

    model, _ = load_checkpoint(CHECKPOINT_T)
    pose, grids, centres = [], [], []
    for path in sorted((FIXTURES / "rtmo-t").glob("outputs_*.npz"))[:1 if args.dry_run else None]:
        with np.load(path) as ref:
            pose.append(ref["dcc_pose_vecs"])
            grids.append(ref["dcc_grids"])
            centres.append(ref["dcc_bbox_cs"][:, :2])
    return dcc_probe(model, *(np.concatenate(x).astype(np.float32) for x in (pose, grids, centres)), device)


def ceiling_section(args, device) -> dict:
    import torch

    from rtmo_triton.model import load_checkpoint, random_model
    from rtmo_triton.spec import DEFAULT_TOPK

    from .ceiling import engine_ceiling
    from .numerics import deploy_graph

    variants = args.variants or ["t"]
    batches = (1, 2) if args.dry_run else (1, 8, 32)
    modes = ("eager", "cuda_graph") + (("compile",) if args.compile else ())
    precision = "fp32" if device.type == "cpu" else args.precision
    out = {"precision": precision, "device": str(device), "variants": {}, "peak_reserved_mib": {}}
    for variant in variants:  # dry run: the fixture checkpoint loads faster than random weights settle
        model = load_checkpoint(CHECKPOINT_T)[0] if args.dry_run else random_model(variant)
        deploy = deploy_graph(model, DEFAULT_TOPK)
        sizes = {"warmup": 0, "iters": 1, "budget_s": 5} if args.dry_run else {"warmup": 10, "iters": 100,
                                                                                 "budget_s": 30}
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        out["variants"][variant] = engine_ceiling(deploy, device, batches, precision=precision, modes=modes,
                                                  **sizes)
        if device.type == "cuda":  # what one engine instance holds at most: sizes instances per GPU
            out["peak_reserved_mib"][variant] = round(torch.cuda.max_memory_reserved(device) / 2**20)
        del model, deploy
    return out


def copies_section(args, device) -> dict:
    from rtmo_triton.spec import DEFAULT_TOPK, NUM_KEYPOINTS, VARIANTS

    from .ceiling import copy_times

    variant = (args.variants or ["t"])[0]
    batches = (1, 2) if args.dry_run else (1, 8, 32)
    return {variant: copy_times(device, VARIANTS[variant].input_size, DEFAULT_TOPK, NUM_KEYPOINTS, batches,
                                repeats=3 if args.dry_run else 20)}


def served_section(args, bundle: Bundle | None, report: Report) -> dict:
    from .bundle import SERVER_ARCHIVE
    from .served import ServedError, installed_root

    if bundle is not None and bundle.server is None:
        raise ServedError(f"{args.bundle} has no {SERVER_ARCHIVE}: every part of the bundle must be staged "
                          "there first, by device calls in a row on one warm machine (docs/gpu.md)")
    root = bundle.server if bundle else installed_root()
    if root is None:
        raise ServedError("no tritonserver: pass --bundle (make gpu-check-prepare), or install "
                          "nvidia-pytriton")
    work = args.work / "served"
    logs = {form.name: work / form.name / "tritonserver.log" for form in args.forms}
    for log in logs.values():
        log.parent.mkdir(parents=True, exist_ok=True)
        log.unlink(missing_ok=True)
    try:
        return _serve(args, root, work, bundle.stub_wheels if bundle else [], report)
    finally:  # the servers' own logs come back with the report, whatever happened
        for form, log in logs.items():
            if log.is_file():
                shutil.copyfile(log, args.out / f"tritonserver-{form}.log")


def _serve(args, root: Path, work: Path, carried: list[Path], report: Report) -> dict:
    """One run of the served ensemble per form (preprocess place and JPEG decoder), the same load for
    each: the fixture photos as 640×480 JPEGs under load, and a lone request at each size of
    ``gpu_jpeg.SIZES``."""
    from .jpeg import SIZES, sized_jpegs
    from .served import serve_and_load

    sized = sized_jpegs(((64, 48),) if args.dry_run else SIZES)
    load = next(iter(sized.values()))
    forms = {}
    for form in args.forms:  # one form failing keeps the others' figures
        said = {"preprocess": form.preprocess, "jpeg_decoder": form.jpeg_decoder}
        if past_deadline(args):  # a form is minutes: the deadline holds between them too
            forms[form.name] = {**said, "skipped": past_deadline(args)}
            report.partial("served", {"forms": forms})
            continue
        try:
            forms[form.name] = serve_and_load(
                root=root, work=work / form.name, images=load, carried=carried, lone=sized,
                checkpoint=CHECKPOINT_T if args.dry_run else None, max_batch=2 if args.dry_run else 8,
                tuned=args.tuned, concurrencies=args.concurrencies, preprocess=form.preprocess,
                jpeg_decoder=form.jpeg_decoder or spec.DEFAULT_JPEG_DECODER,
                level_s=1.0 if args.dry_run else 6.0,
                benchmark=args.served_weights == "benchmark" and not args.dry_run)
        except Exception as exc:  # noqa: BLE001 - a failed form fails the check; the next one still runs
            forms[form.name] = {**said, "error": report.failed(f"served:{form.name}", exc)}
        report.partial("served", {"forms": forms})
    return {"forms": forms}


def jpeg_section(args, device) -> dict:
    from rtmo_triton.model import load_checkpoint

    from .jpeg import jpeg_section as measure

    return measure(device=device, dry_run=args.dry_run, model=load_checkpoint(CHECKPOINT_T)[0])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.started = time.perf_counter()  # the deadline counts the bundle's unpacking too
    args.work.mkdir(parents=True, exist_ok=True)
    bundle = use_bundle(args.bundle, args.work) if args.bundle else None
    import torch

    on_cpu = args.dry_run or args.cpu
    if not on_cpu and not torch.cuda.is_available():
        print(f"gpu-check: PyTorch {torch.__version__} sees no CUDA device here, so nothing of the GPU path "
              "can be measured. Run it on a GPU host (docs/gpu.md); `--dry-run` rehearses it on the CPU.",
              file=sys.stderr)
        return 2
    device = torch.device("cpu" if on_cpu else "cuda")
    command = shlex.join(["python", "-m", "perf.gpu.check", *(argv or sys.argv[1:])])
    config = {"dry_run": args.dry_run, "cpu": args.cpu, "variants": args.variants, "sections": args.sections,
              "command": command}
    report = Report(args.out, environment(args.label), config)
    sections = {"numerics": (numerics_section, args, device), "dcc_probe": (dcc_probe_section, args, device),
                "jpeg": (jpeg_section, args, device),
                "ceiling": (ceiling_section, args, device), "copies": (copies_section, args, device),
                "served": (served_section, args, bundle, report)}
    for name in args.sections:
        if name not in sections:
            raise SystemExit(f"unknown section {name!r}: choose from {', '.join(sections)}")
        if past_deadline(args):
            report.data["sections"][name] = {"skipped": past_deadline(args)}
            continue
        if name == "copies" and device.type == "cpu":
            report.data["sections"][name] = {"skipped": "no device: nothing to copy to"}
            continue
        fn, *rest = sections[name]
        report.section(name, fn, *rest)
    report.write()
    failed = [n for n in report.data["errors"] if not n.endswith("_traceback")]
    print(f"report: {args.out / 'gpu_check.md'}; failed sections: {', '.join(failed) or 'none'}")
    return 1 if report.data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
