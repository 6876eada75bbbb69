"""``make gpu-check`` cannot rot: its CPU dry run runs every section here, and without a GPU the real
run refuses. The pieces that read Triton's metrics and pack the offline bundle are checked on their own."""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from perf.gpu import bundle as gpu_bundle
from perf.gpu.check import CHECKPOINT_T, Report, ServedForm, markdown, missing_here, parse_args, use_bundle
from perf.gpu.served import build_repository, model_stats
from rtmo_triton import spec
from rtmo_triton.serve.tritonserver import pytriton_root
from rtmo_triton.served.bundle import PACKAGES_DIR, archive_name, running_python

from .served import require_server

ENVIRONMENT = {"torch": "2.11.0", "torch_cuda": "13.0", "cudnn": 91000, "numpy": "2.5.2",
               "onnxruntime": "1.30.0", "onnx": "1.23.1", "python": "3.12.3", "cpus": 16,
               "date": "2026-11-26", "label": "abc123",
               "device": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "device_memory_gib": 79.2,
               "driver": "580.159.04"}
CONFIG = {"dry_run": False, "command": "python -m perf.gpu.check"}


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perf.gpu.check", *args], capture_output=True,
                          text=True, timeout=1200)


@pytest.mark.server
def test_dry_run_runs_every_section_on_the_cpu(tmp_path):
    require_server()
    tuned = tmp_path / "tuned.json"  # instances of the served models come from a tuned file, as in the build
    tuned.write_text(json.dumps({spec.PREPROCESS_NAME: {"instances": 3}, spec.DECODE_NAME: {"instances": 1}}))
    done = gpu_check("--dry-run", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
                     "--tuned", str(tuned), "--concurrencies", "1,3")
    print(done.stdout[-3000:], done.stderr[-3000:])
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["errors"] == {} and report["config"]["dry_run"] is True
    sections = report["sections"]
    assert set(sections) == {"numerics", "dcc_probe", "jpeg", "ceiling", "copies", "served"}
    # numerics: FP32 PyTorch serves the ONNX path's people; every setting is finite
    [t] = sections["numerics"]
    fp32 = t["settings"]["fp32"]
    assert fp32["people"]["missed"] == fp32["people"]["extra"] == 0 and fp32["people"]["found"] > 0
    assert fp32["keypoint_px"]["p99"] < 0.1
    assert set(t["settings"]) == {"fp32", "fp16", "fp16_fp32_geometry"}  # TF32 is CUDA's
    assert all(s["nonfinite_total"] == 0 for s in t["settings"].values())
    # the probe: an FP16 bin code moves keypoints more the larger the box
    probe = sections["dcc_probe"]["box_sizes_px"]
    assert probe["800"]["keypoint_px"]["max"] > probe["100"]["keypoint_px"]["max"] > 0
    assert sections["ceiling"]["variants"]["t"]["1"]["eager"]["images_per_s"] > 0
    assert "skipped" in sections["copies"]
    # the GPU-resident stages: on the CPU, libjpeg-turbo stands in for nvJPEG and nvImageCodec runs its
    # own libjpeg-turbo, so each decoder's pixels and people agree with the CPU path's
    jpeg = sections["jpeg"]
    assert jpeg["letterbox"]["differing_values"] == 0
    on_device = jpeg["device_decoder"]
    assert on_device["same_people_counts"] and on_device["max_abs_keypoint_px"] < 1e-2
    assert set(jpeg["decoders"]) == set(spec.JPEG_DECODERS)
    assert all(rate > 0 for rate in jpeg["libjpeg_one_core_images_per_s"].values())
    for name, measured in jpeg["decoders"].items():
        assert "error" not in measured and "skipped" not in measured, (name, measured)
        assert all(d["max_abs"] == 0 and d["values"] > 0 and d["refused"] == 0
                   for d in measured["pixels"].values()), name
        assert set(measured["corruption"]) == {"drained", "undrained"}
        for test in measured["corruption"].values():
            assert test["iterations"] == 2 and test["batch"] > 0, (name, test)
            assert test["corrupted_iterations"] == test["changed_images"] == test["refused_images"] == 0
        people = measured["people"]["people"]
        assert people["missed"] == people["extra"] == 0 and people["found"] > 0, name
        assert all(r["preprocess_batch_2_host_cpu_ms_per_image"] > 0 for r in measured["throughput"].values())
    # the dry run's one form: the torch stages with the default decoder, on the CPU
    served = sections["served"]["forms"][f"gpu-{spec.DEFAULT_JPEG_DECODER}"]
    assert served["preprocess"] == "gpu" and served["weights"] == "fixture checkpoint"
    assert served["jpeg_decoder"] == spec.DEFAULT_JPEG_DECODER
    # on the CPU torchvision leaves every JPEG to the host, as the preprocess logs and /metrics say
    assert any("simplejpeg" in said for said in served["preprocess_log"]), served["preprocess_log"]
    assert all(level["models"][spec.PREPROCESS_NAME]["host_decodes_per_image"] == 1
               for level in served["levels"])
    assert list(served["lone_request_ms"]) == ["64x48"] and served["lone_request_ms"]["64x48"]["p50"] > 0
    assert [level["concurrency"] for level in served["levels"]] == [1, 3]
    cpus = report["environment"]["cpus"]
    for level in served["levels"]:  # CPU time comes in 10 ms ticks: a short level's client may show 0
        assert 0 <= level["client_cores"] <= level["host_cores_busy"] <= cpus, level
        assert level["host_cores_busy"] > 0, level  # the server worked during every level
    assert all(level["ok"] == level["requests"] for level in served["levels"])
    assert served["shm_regions"] == served["instances"] == {spec.PREPROCESS_NAME: 3, spec.ENGINE_NAME: 2,
                                                            spec.DECODE_NAME: 1}
    assert served["max_batch_phase"]["ok"] == served["max_batch_phase"]["requests"]
    assert set(served["shm_bytes_per_model"]) == {spec.PREPROCESS_NAME, spec.ENGINE_NAME, spec.DECODE_NAME}
    assert all(size > 0 for size in served["shm_bytes_per_model"].values())
    md = (tmp_path / "out" / "gpu_check.md").read_text()
    assert md.startswith("# GPU check — DRY RUN on the CPU") and "| t (fixture checkpoint) | fp16 |" in md
    assert f"## Served ensemble, torch flavour, gpu preprocess, JPEGs by {spec.DEFAULT_JPEG_DECODER} (" in md
    assert "## GPU-resident stages" in md and "### nvimgcodec: JPEG decoded" in md
    assert "; decodes that changed 0 / 0: " in md and "| images decoded on the host |" in md
    assert (f"| concurrency | {spec.PREPROCESS_NAME} (3) | {spec.ENGINE_NAME} (2) | {spec.DECODE_NAME} (1) |"
            in md)


@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--concurrencies", "1,x", "comma-separated whole numbers"),
    ("--concurrencies", "0,4", "at least one request"),
    ("--tuned", "/nonexistent/tuned.json", "no such file"),
    ("--jpeg-decoder", "torchvision,libjpeg", "comma-separated"),
])
def test_bad_served_settings_are_usage_errors(tmp_path, flag, value, says):
    done = gpu_check("--dry-run", "--sections", "served", "--out", str(tmp_path / "out"), flag, value)
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr


def test_a_real_run_serves_each_jpeg_decoder_as_its_own_form_beside_the_cpu_preprocess():
    assert [f.name for f in parse_args([]).forms] == [*(f"gpu-{d}" for d in spec.JPEG_DECODERS), "cpu"]
    assert [f.name for f in parse_args(["--dry-run"]).forms] == [f"gpu-{spec.DEFAULT_JPEG_DECODER}"]
    chosen = parse_args(["--preprocess", "cpu,gpu", "--jpeg-decoder", "nvimgcodec"]).forms
    assert chosen == [ServedForm("cpu", None), ServedForm("gpu", "nvimgcodec")]


def test_no_served_form_starts_past_the_deadline(tmp_path):
    import time

    from perf.gpu.check import _serve

    args = parse_args(["--dry-run", "--deadline-s", "1"])
    args.started = time.perf_counter() - 2
    report = Report(tmp_path / "out", ENVIRONMENT, CONFIG)
    forms = _serve(args, tmp_path, tmp_path, [], report)["forms"]
    assert report.data["sections"]["served"] == {"forms": forms} and report.data["errors"] == {}
    assert forms == {f"gpu-{spec.DEFAULT_JPEG_DECODER}": {
        "preprocess": "gpu", "jpeg_decoder": spec.DEFAULT_JPEG_DECODER,
        "skipped": "not started: past --deadline-s 1"}}
    md = markdown({"environment": ENVIRONMENT, "config": CONFIG, "errors": {}, "seconds": {},
                   "sections": {"served": {"forms": forms}}})
    assert (f"## Served ensemble, torch flavour, gpu preprocess, JPEGs by {spec.DEFAULT_JPEG_DECODER}: "
            "skipped (not started: past --deadline-s 1)") in md


def test_a_served_form_that_fails_fails_the_check_and_the_next_form_still_runs(tmp_path, monkeypatch):
    from perf.gpu import served
    from perf.gpu.check import _serve

    def serve_and_load(*, preprocess: str, jpeg_decoder: str, **_) -> dict:
        if preprocess == "gpu":
            raise served.ServedError("a request of 1 image(s) failed")
        return {"preprocess": preprocess, "levels": [], "build_s": 1.0, "images": 6, "max_batch": 2}

    monkeypatch.setattr(served, "serve_and_load", serve_and_load)
    args = parse_args(["--dry-run", "--preprocess", "gpu,cpu"])
    args.started = 0.0
    report = Report(tmp_path / "out", ENVIRONMENT, CONFIG)
    forms = _serve(args, tmp_path, tmp_path, [], report)["forms"]
    gpu = f"gpu-{spec.DEFAULT_JPEG_DECODER}"
    assert forms[gpu]["error"] == "perf.gpu.served.ServedError: a request of 1 image(s) failed"
    assert forms["cpu"]["levels"] == [] and (tmp_path / "out" / "gpu_check.json").is_file()
    assert report.data["errors"][f"served:{gpu}"] == forms[gpu]["error"]  # the check exits 1
    assert "Traceback" in report.data["errors"][f"served:{gpu}_traceback"]


def test_without_a_gpu_the_real_run_refuses(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    done = gpu_check("--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"))
    assert done.returncode == 2
    assert "sees no CUDA device" in done.stderr and "--dry-run" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_markdown_says_what_failed():
    data = {"environment": ENVIRONMENT, "config": CONFIG,
            "sections": {}, "errors": {"served": "ServedError: the stub needs libpython3.12.so.1.0"},
            "seconds": {"served": 1.0}}
    md = markdown(data)
    assert "NVIDIA H100 80GB HBM3, sm 9.0" in md and "driver: 580.159.04" in md and "DRY RUN" not in md
    assert "## served: FAILED" in md and "libpython3.12.so.1.0" in md


def test_markdown_gives_the_engines_gpu_memory_where_it_was_measured():
    timing = {"images_per_s": 900.0, "batch_ms_mean": 8.9, "latency_ms_p50": 8.8, "latency_ms_p99": 9.5}
    ceiling = {"precision": "fp16", "device": "cuda:0", "variants": {"s": {"8": {"cuda_graph": timing}}},
               "peak_reserved_mib": {"s": 812, "l": 2050}}
    data = {"environment": ENVIRONMENT, "config": CONFIG, "sections": {"ceiling": ceiling},
            "errors": {}, "seconds": {"ceiling": 1.0}}
    md = markdown(data)
    assert "| s | 8 | cuda_graph | 900 | 8.90 | 8.80 / 9.50 |" in md
    assert "(deploy graph alone, FP16 on cuda:0," in md
    data["sections"]["ceiling"] = {**ceiling, "precision": "fp32"}
    assert "(deploy graph alone, FP32 (TF32 off) on cuda:0," in markdown(data)
    assert "per variant (weights, every batch above, their CUDA graphs in one pool): RTMO-s 812 MiB, " \
           "RTMO-l 2050 MiB" in md


def test_markdown_keeps_the_form_that_served_when_the_other_failed():
    level = {"concurrency": 1, "requests": 4, "ok": 4, "images_per_s": 50.0,
             "latency_ms": {"p50": 20.0, "p90": 21.0, "p99": 22.0},
             "models": {spec.PREPROCESS_NAME: {"host_decodes_per_image": 0.25}}}
    cpu = {"preprocess": "cpu", "build_s": 1.0, "images": 6, "max_batch": 8, "levels": [level]}
    gpu = {"preprocess": "gpu", "error": "ServedError: boom", "traceback": "Traceback ...\nServedError: boom"}
    data = {"environment": ENVIRONMENT, "config": CONFIG, "errors": {}, "seconds": {"served": 1.0},
            "sections": {"served": {"forms": {"gpu": gpu, "cpu": cpu}}}}
    md = markdown(data)
    assert "## Served ensemble, torch flavour, gpu preprocess: FAILED" in md and "ServedError: boom" in md
    assert "## Served ensemble, torch flavour, cpu preprocess (" in md
    assert "| images decoded on the host |" in md and "| 25% |" in md


def test_the_corruption_test_counts_decodes_that_change():
    from perf.gpu.jpeg import corruption

    calls = itertools.count()

    def drifting(encoded: list[bytes]) -> list[torch.Tensor]:  # each call decodes other pixels
        value = next(calls)
        return [torch.full((4, 4, 3), value, dtype=torch.uint8) for _ in encoded]

    out = corruption([b"a", b"b"], drifting, torch.device("cpu"), iterations=3, queued_ms=0.1)
    assert out["changed_images"] == 6 and out["corrupted_iterations"] == 0 and out["refused_images"] == 0
    refused = corruption([b"a"], lambda encoded: [None] * len(encoded), torch.device("cpu"), iterations=3,
                         queued_ms=0.1)
    assert refused["refused_images"] == 1 and refused["changed_images"] == 0


def test_the_corruption_test_sees_when_a_decode_takes_the_freed_outputs_memory():
    from perf.gpu.jpeg import corruption

    pool = [torch.zeros((4, 4, 3), dtype=torch.uint8) for _ in range(2)]

    def pooled(encoded: list[bytes]) -> list[torch.Tensor]:  # writes into the same buffers every call
        for buffer in pool:
            buffer.fill_(7)
        return pool[:len(encoded)]

    out = corruption([b"a", b"b"], pooled, torch.device("cpu"), iterations=3, queued_ms=0.1)
    assert out["reused_iterations"] == 3 and out["changed_images"] == 0
    assert out["corrupted_iterations"] == 0  # on the CPU the sums ran before the decode wrote


@pytest.mark.parametrize(("waited", "control", "verdict"), [
    ((40, 0), (40, 31), "the hazard is real on this host, and the stream wait prevents it"),
    ((40, 2), (40, 31), "**corrupted even with the stream wait**"),
    ((0, 0), (0, 0), "inconclusive: the decoder never got a freed output's memory"),
    ((40, 0), (40, 0), "no hazard on this host"),
])
def test_markdown_says_what_the_corruption_test_shows(waited, control, verdict):
    from perf.gpu.check import _corruption

    def test(reused: int, corrupted: int) -> dict:
        return {"batch": 32, "iterations": 40, "refused_images": 0, "queued_ms": 51.2,
                "reused_iterations": reused, "corrupted_iterations": corrupted, "changed_images": 0}

    [line] = _corruption({"drained": test(*waited), "undrained": test(*control)})
    assert line.endswith(verdict) or verdict in line
    assert f"with the stream wait {waited[0]} / {waited[1]}, without it {control[0]} / {control[1]}" in line


def test_model_stats_from_triton_counters():
    before = {("nv_inference_count", "rtmo_engine"): 10.0, ("nv_inference_exec_count", "rtmo_engine"): 10.0,
              ("nv_inference_request_success", "rtmo_engine"): 10.0,
              ("nv_inference_queue_duration_us", "rtmo_engine"): 1000.0,
              ("nv_inference_compute_infer_duration_us", "rtmo_engine"): 50_000.0}
    after = {("nv_inference_count", "rtmo_engine"): 42.0, ("nv_inference_exec_count", "rtmo_engine"): 18.0,
             ("nv_inference_request_success", "rtmo_engine"): 42.0,
             ("nv_inference_queue_duration_us", "rtmo_engine"): 33_000.0,
             ("nv_inference_compute_infer_duration_us", "rtmo_engine"): 210_000.0}
    stats = model_stats(before, after)["rtmo_engine"]
    assert stats == {"mean_batch": 4.0, "queue_ms": 1.0, "compute_ms": 5.0}
    before[spec.HOST_DECODES_METRIC, "rtmo_engine"] = 3.0
    after[spec.HOST_DECODES_METRIC, "rtmo_engine"] = 11.0
    assert model_stats(before, after)["rtmo_engine"]["host_decodes_per_image"] == 0.25


def test_bundle_takes_the_hosts_stub_and_the_libraries_not_another_python():
    root = pytriton_root()
    if root is None:
        pytest.skip("nvidia-pytriton is not installed")
    files = dict((rel, src) for src, rel in gpu_bundle.server_files(root, gpu_bundle.HOST_PYTHON))
    stub = files["pytriton/tritonserver/backends/python/triton_python_backend_stub"]
    assert stub.parent.name == gpu_bundle.HOST_PYTHON  # the 3.12 stub, in the backend's folder
    assert "pytriton/tritonserver/bin/tritonserver" in files
    libs = [rel for rel in files if rel.startswith("nvidia_pytriton.libs/")]
    assert any("libtritonserver" in rel for rel in libs) and not any("libpython" in rel for rel in libs)


def test_bundle_counts_what_travels(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "tracked.txt").write_bytes(b"x" * 1000)
    (tmp_path / ".gitignore").write_text("ignored/\n")
    (tmp_path / "ignored").mkdir()
    (tmp_path / "ignored" / "big").write_bytes(b"x" * 5000)
    (tmp_path / ".gpu-check").mkdir()
    (tmp_path / ".gpu-check" / "server").write_bytes(b"x" * 7000)
    assert gpu_bundle.travelling_bytes(tmp_path, tmp_path / ".gpu-check") == 1000 + len("ignored/\n")
    gpu_bundle.ignore_locally(tmp_path, tmp_path / ".gpu-check")
    gpu_bundle.ignore_locally(tmp_path, tmp_path / ".gpu-check")
    assert (tmp_path / ".git" / "info" / "exclude").read_text().split().count("/.gpu-check/") == 1


def test_the_bundle_installs_only_what_this_interpreter_lacks_or_has_older(tmp_path):
    import numpy as np

    for name in (f"numpy-{np.__version__}-cp312-cp312-manylinux_2_17_x86_64.whl",
                 "numpy-999.0-cp312-none-any.whl", "absent_package-1.0-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"")
    assert [w.name for w in missing_here(tmp_path)] == ["absent_package-1.0-py3-none-any.whl",
                                                        "numpy-999.0-cp312-none-any.whl"]


def test_a_server_wheel_that_will_not_install_is_reported_and_the_check_goes_on(tmp_path, capsys):
    server = tmp_path / "wheels" / "server"
    server.mkdir(parents=True)
    with zipfile.ZipFile(server / "absent_broken_package-1.0-py3-none-any.whl", "w") as z:
        z.writestr("absent_broken_package/__init__.py", "")  # no .dist-info: pip refuses it
    (tmp_path / "bundle").mkdir()
    gpu_bundle.archive_wheels(tmp_path / "wheels", tmp_path / "bundle" / gpu_bundle.WHEELS_ARCHIVE)
    found = use_bundle(tmp_path / "bundle", tmp_path / "work")
    assert found.server is None and found.stub_wheels == []
    assert "[bundle] absent_broken_package-1.0-py3-none-any.whl did not install: " in capsys.readouterr().out


def test_the_wheels_travel_stored_in_one_xz_archive_and_unpack_unchanged(tmp_path):
    """Deflated members would leave xz nothing to compress; stored ones must keep every file and RECORD."""
    stub = tmp_path / "wheels" / "stub"
    stub.mkdir(parents=True)
    wheel = _wheel(stub, "carried_pkg")
    with zipfile.ZipFile(wheel) as z:
        before = {n: z.read(n) for n in z.namelist()}
    archive = tmp_path / gpu_bundle.WHEELS_ARCHIVE
    gpu_bundle.archive_wheels(tmp_path / "wheels", archive)
    (tmp_path / "host" / gpu_bundle.WHEELS / "stale").mkdir(parents=True)  # what an earlier staging left
    folder = gpu_bundle.unpack_wheels(archive, tmp_path / "host")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        f"stub/{wheel.name}"]
    with zipfile.ZipFile(folder / "stub" / wheel.name) as z:
        assert {n: z.read(n) for n in z.namelist()} == before
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
    assert not gpu_bundle.unpack_wheels(tmp_path / "absent.tar.xz", tmp_path / "none").exists()


def test_the_bundle_travels_in_parts_that_each_fit_a_call(tmp_path):
    mib = 1 << 20
    files = [(tmp_path / name, size * mib) for name, size in
             (("tritonserver.tar.xz", 23), ("numpy.whl", 17), ("grpcio.whl", 7), ("rapidjson.whl", 2),
              ("protobuf.whl", 1))]
    parts = gpu_bundle.split(files, room=26 * mib)
    sizes = dict(files)
    assert len(parts) == 2 and all(sum(sizes[f] for f in part) <= 26 * mib for part in parts)
    assert sorted(f for part in parts for f in part) == sorted(sizes)
    with pytest.raises(SystemExit, match="alone is over"):
        gpu_bundle.split([(tmp_path / "huge", 27 * mib)], room=26 * mib)
    first, last = gpu_bundle.device_calls(tmp_path / ".gpu-check", 2, tmp_path)
    assert 'carry=[".gpu-check/call1"]' in first and "perf.gpu.check" not in first  # stages only
    assert 'carry=[".gpu-check/call2"]' in last and f"perf.gpu.check --bundle {gpu_bundle.STAGE}" in last
    assert f"cp -r .gpu-check/call2/. {gpu_bundle.STAGE}/" in last


def test_the_decoder_wheel_keeps_only_the_hosts_module_and_the_jpeg_extensions(tmp_path):
    wheel = tmp_path / "nvidia_nvimgcodec_cu13-0.9-py3-none-manylinux_2_28_x86_64.whl"
    pkg, ext = "nvidia/nvimgcodec/", "nvidia/nvimgcodec/extensions/"
    kept = [f"{pkg}__init__.py", f"{pkg}libnvimgcodec.so.0", f"{ext}libnvjpeg_ext.so.0.9",
            f"{ext}libjpeg_turbo_ext.so.0.9", f"{pkg}nvimgcodec_impl.cpython-312-x86_64.so",
            "nvidia/__init__.py", "nvidia_nvimgcodec_cu13-0.9.dist-info/METADATA"]
    dropped = [f"{pkg}nvimgcodec_impl.cpython-311-x86_64.so", f"{pkg}nvimgcodec_impl.cpython-313t-x.so",
               f"{ext}libopencv_ext.so.0.9", f"{ext}libnvtiff_ext.so.0.9", f"{pkg}include/nvimgcodec.h",
               f"{pkg}tools/dicom/convert.py"]
    record = "nvidia_nvimgcodec_cu13-0.9.dist-info/RECORD"
    with zipfile.ZipFile(wheel, "w") as z:
        for name in kept + dropped:
            z.writestr(name, name)
        z.writestr(record, "".join(f"{n},sha256=x,{len(n)}\n" for n in kept + dropped) + f"{record},,\n")
    gpu_bundle.trim_wheel(wheel, "3.12")
    with zipfile.ZipFile(wheel) as z:
        assert sorted(z.namelist()) == sorted([*kept, record])
        assert all(z.read(n) == n.encode() for n in kept)
        assert [line.split(",")[0] for line in z.read(record).decode().splitlines()] == [*kept, record]
    with pytest.raises(SystemExit, match="no module for CPython 3.10"):
        gpu_bundle.trim_wheel(wheel, "3.10")


def _wheel(folder: Path, name: str) -> Path:
    """A minimal pure-Python wheel, made here: the check must work offline."""
    wheel = folder / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:  # as pip downloads them
        z.writestr(f"{name}/__init__.py", "CARRIED = True\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        z.writestr(f"{info}/WHEEL",
                   "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return wheel


def test_the_served_repository_carries_the_bundles_stub_wheels_in_every_python_model(tmp_path):
    """On the GPU hosts numpy 1 must reach the stubs ahead of the host's numpy 2: each Python model gets
    an archive of the stub wheels for this interpreter, which ``served.bundle`` puts first on the path."""
    wheel = _wheel(tmp_path, "tinycarried")
    repo = tmp_path / "repo"
    build_repository(repo, checkpoint=CHECKPOINT_T, max_batch=2, carried=[wheel], preprocess="cpu",
                     jpeg_decoder=spec.DEFAULT_JPEG_DECODER,
                     log=lambda *_: None)
    models = sorted(p.parent.parent.name for p in repo.glob("*/1/model.py"))
    assert models == sorted([spec.PREPROCESS_NAME, spec.ENGINE_NAME, spec.DECODE_NAME])
    for model in models:
        archive = repo / model / "1" / PACKAGES_DIR / archive_name(running_python())
        with tarfile.open(archive) as tar:
            assert "tinycarried/__init__.py" in tar.getnames()
