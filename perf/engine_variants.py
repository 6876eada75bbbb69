"""Served `rtmo` throughput under several engine thread layouts, side by side.

On a small CPU the engine's onnxruntime threads share cores with the
preprocess and decode instances; how the engine's threads are laid out
(one instance using every core, or one single-threaded instance per core,
and whether idle pool threads spin) decides how much the other stages
slow it down. Each variant is a copy of the model repository in a
temporary folder with only the engine's config changed, served and measured
with perf_analyzer on the 640×480 JPEG. Nothing in the real repository changes.

A variant is ``name:instances:intra_op_threads:spin[:max_queue_delay_us]``
(spin 0 turns off onnxruntime's spin-waiting, through a model.py in the
copy that rebuilds the session with ``session.intra_op.allow_spinning=0``;
the delay, when given, replaces the engine's dynamic-batching delay: with
several single-threaded instances a delay gathers concurrent requests into
one batch on one instance and leaves the others idle).

    python perf/engine_variants.py [--variants 1xall:1:0:1:20000,...] [--concurrency 2,4]
"""
from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perf.inputs import write_input_data  # noqa: E402
from perf.perf_sweep import sweep  # noqa: E402
from rtmo_triton import spec  # noqa: E402
from rtmo_triton.serving.server import TritonServer, exit_on_sigterm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VARIANTS = ("1xall:1:0:1:20000,1xall-nospin:1:0:0:20000,2x1thread-delay:2:1:1:20000,"
                    "2x1thread-nospin-delay:2:1:0:20000,2x1thread-nodelay:2:1:1:0,"
                    "2x1thread-nospin-nodelay:2:1:0:0")
"""1xall: one instance on every core; 2x1thread: two single-threaded instances (the shipped CPU layout)."""
NO_SPIN_MODEL = '''\
"""Experiment only (perf/engine_variants.py): the served engine with onnxruntime's spin-waiting off."""
import sys
from pathlib import Path

import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).parent))
from model_shipped import TritonPythonModel as Shipped  # noqa: E402


class TritonPythonModel(Shipped):
    def initialize(self, args):
        super().initialize(args)
        old = self.engine.session
        options = ort.SessionOptions()
        options.intra_op_num_threads = old.get_session_options().intra_op_num_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.engine.session = ort.InferenceSession(old._model_path, options,
                                                   providers=["CPUExecutionProvider"])
'''


def variant_repository(source: Path, dest: Path, instances: int, threads: int, spin: bool,
                       delay_us: int | None = None) -> None:
    """Copy of ``source`` (the ONNX file linked, not copied) with the engine's layout changed."""
    shutil.copytree(source, dest, symlinks=True, ignore=shutil.ignore_patterns("*.onnx", "__pycache__"))
    for onnx in source.glob("*/*/*.onnx"):
        (dest / onnx.relative_to(source)).symlink_to(onnx.resolve())
    path = dest / spec.ENGINE_NAME / "config.pbtxt"
    config = text_format.Parse(path.read_text(), mc.ModelConfig())
    config.instance_group[0].count = instances
    config.parameters["intra_op_threads"].string_value = str(threads)
    if delay_us is not None:
        config.dynamic_batching.max_queue_delay_microseconds = delay_us
    path.write_text(text_format.MessageToString(config))
    if not spin:
        version = dest / spec.ENGINE_NAME / "1"
        (version / "model.py").rename(version / "model_shipped.py")
        (version / "model.py").write_text(NO_SPIN_MODEL)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    p.add_argument("--variants", default=DEFAULT_VARIANTS)
    p.add_argument("--concurrency", default="2,4")
    p.add_argument("--window-requests", type=int, default=24)
    p.add_argument("--rounds", type=int, default=1, help="measure every variant this many times, in turn")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "perf")
    p.add_argument("--csv-name", default="engine_variants.csv")
    args = p.parse_args(argv)
    exit_on_sigterm()
    args.out.mkdir(parents=True, exist_ok=True)
    data = write_input_data(args.out / "inputs")["640x480"][spec.ENSEMBLE_NAME]
    levels = [int(c) for c in args.concurrency.split(",")]
    rows = []
    for rnd, variant in ((r, v) for r in range(args.rounds) for v in args.variants.split(",")):
        name, instances, threads, spin, *delay = variant.split(":")
        with tempfile.TemporaryDirectory() as tmp:
            repo = Path(tmp) / "repo"
            variant_repository(args.model_repository.resolve(), repo, int(instances), int(threads),
                               spin == "1", int(delay[0]) if delay else None)
            part = args.out / f"variant_{name}.csv"
            with TritonServer(repo, log_path=Path(tmp) / "tritonserver.log") as server:
                print(f"variant {name}: engine instances={instances} intra_op_threads={threads} "
                      f"spinning={'on' if spin == '1' else 'off'}", flush=True)
                sweep(server, spec.ENSEMBLE_NAME, data, levels, part, args.window_requests)
        if part.exists():
            with part.open() as f:
                for r in csv.DictReader(f):
                    rows.append([rnd, name, instances, threads, spin, delay[0] if delay else "",
                                 r["Concurrency"], r["Inferences/Second"], r["p50 latency"],
                                 r["p99 latency"]])
            part.unlink()
    out = args.out / args.csv_name
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["round", "variant", "engine_instances", "intra_op_threads", "spinning", "queue_delay_us",
                    "concurrency", "throughput_per_s", "p50_us", "p99_us"])
        w.writerows(rows)
    for r in rows:
        print(f"round {r[0]} {r[1]:24s} concurrency {r[6]}: {float(r[7]):.2f} infer/s, "
              f"p50 {int(r[8]) / 1e3:.0f} ms")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
