"""`make build-engines` (rtmo_triton.build) and the tritonserver launcher, without a server."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from rtmo_triton import spec
from rtmo_triton.build import repository as build
from rtmo_triton.build.export import onnx_metadata
from rtmo_triton.build.packages import CONTAINER_PYTHON, default_pythons
from rtmo_triton.serve import tritonserver
from rtmo_triton.served.bundle import PACKAGES_DIR, archive_name

from .golden import CHECKPOINT_T


def config(repo, name) -> mc.ModelConfig:
    return text_format.Parse((repo / name / "config.pbtxt").read_text(), mc.ModelConfig())


def params(c: mc.ModelConfig) -> dict[str, str]:
    return {k: v.string_value for k, v in c.parameters.items()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    repo = tmp_path_factory.mktemp("random") / "repo"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = build.main(["--model-repository", str(repo), "--engine", "onnx", "--topk", "50",
                           "--max-batch", "4", "--score-thr", "0.25", "--nms-thr", "0.6"])
    assert code == 0
    return repo, err.getvalue()


@pytest.fixture(scope="module")
def random_repo(built):
    return built[0]


def test_without_checkpoint_builds_random_rtmo_s_and_says_so(built):
    random_repo, stderr = built
    assert "DETERMINISTIC RANDOM WEIGHTS" in stderr and f"RTMO-{spec.DEFAULT_VARIANT.upper()}" in stderr
    ensemble = params(config(random_repo, spec.ENSEMBLE_NAME))
    assert ensemble["random_weights"] == "true" and "not a trained model" in ensemble["weights"]
    assert ensemble["variant"] == spec.DEFAULT_VARIANT
    meta = onnx_metadata(random_repo / spec.ENGINE_NAME / "1" / "model.onnx")
    assert meta["random_weights"] == "true" and meta["topk"] == "50"


def test_settings_reach_the_served_models(random_repo):
    assert params(config(random_repo, spec.DECODE_NAME))["score_thr"] == "0.25"
    assert params(config(random_repo, spec.DECODE_NAME))["nms_thr"] == "0.6"
    assert all(config(random_repo, n).max_batch_size >= 4 for n in
               (spec.ENSEMBLE_NAME, spec.PREPROCESS_NAME, spec.ENGINE_NAME, spec.DECODE_NAME))
    assert config(random_repo, spec.ENSEMBLE_NAME).max_batch_size == 4
    assert list(config(random_repo, spec.ENGINE_NAME).output[0].dims) == [50]


def test_the_served_graph_is_found_in_an_onnx_repository(random_repo):
    from rtmo_triton.build.configs import engine_onnx

    assert engine_onnx(random_repo) == random_repo / spec.ENGINE_NAME / "1" / "model.onnx"


def test_python_models_bring_their_code_and_packages(random_repo):
    """Each Python model: a model.py importing its module from the code vendored beside it, and one
    package archive per Python version asked for (the container's and this interpreter's)."""
    import rtmo_triton

    for name in (spec.PREPROCESS_NAME, spec.ENGINE_NAME, spec.DECODE_NAME):
        version = random_repo / name / "1"
        shim = (version / "model.py").read_text()
        assert f"from rtmo_triton.served.models.{name} import TritonPythonModel" in shim
        module = Path("served") / "models" / f"{name}.py"
        vendored = version / "rtmo_triton" / module
        assert vendored.read_text() == (Path(rtmo_triton.__file__).parent / module).read_text()
        assert not (version / "rtmo_triton" / "build").exists(), "only the served code is vendored"
        archives = sorted(p.name for p in (version / PACKAGES_DIR).iterdir())
        assert archives == [archive_name(v) for v in default_pythons()]
        assert CONTAINER_PYTHON in default_pythons()


def test_checkpoint_provenance_and_k_clamped_to_cells(tmp_path):
    assert build.main(["--checkpoint", str(CHECKPOINT_T), "--model-repository", str(tmp_path),
                       "--engine", "onnx", "--topk", "5000"]) == 0
    ensemble = params(config(tmp_path, spec.ENSEMBLE_NAME))
    assert ensemble["random_weights"] == "false" and ensemble["checkpoint"] == CHECKPOINT_T.name
    assert len(ensemble["checkpoint_sha256"]) == 64
    assert ensemble["topk"] == str(spec.num_cells(416))


@pytest.mark.parametrize(("argv", "message"), [
    (["--checkpoint", "/nonexistent/rtmo.pth"], "checkpoint not found"),
    (["--topk", "0"], "--topk must be"),
    (["--engine", "tensorflow"], "invalid choice"),
    (["--engine-threads", "-1"], "--engine-threads must be"),
    (["--max-batch", "0"], "--max-batch must be ≥ 1"),
    (["--score-thr", "1.5"], "--score-thr must be in [0, 1)"),
    (["--max-queue", "-1"], "--max-queue must be ≥ 0"),
    (["--pythons", "3."], "--pythons takes versions like 3.10"),
])
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    """Checked before any work: a bad setting must not cost an export first."""
    with pytest.raises(SystemExit) as exit_info:
        build.parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_tensorrt_flavour_reads_a_gpu_tuning_and_sizes_the_plan_for_it(tmp_path, monkeypatch):
    """Without a GPU here, TensorRT is replaced at the plan builder: what is tested is what build-engines
    asks of it and how the repository around the plan is rendered."""
    from rtmo_triton.build import configs, flavour

    gpu_tuned = tmp_path / "tuned_gpu.json"
    gpu_tuned.write_text(json.dumps({spec.ENGINE_NAME: {"instances": 1, "max_queue_delay_us": 1000,
                                                        "max_batch": 32}}))
    monkeypatch.setattr(flavour, "choose_flavour", lambda requested: flavour.Flavour("trt", "test"))
    asked = {}

    def fake_plan(onnx_path, plan, precision, max_batch):
        asked.update(onnx=onnx_path, precision=precision, max_batch=max_batch, had_plan=plan.is_file())
        plan.write_bytes(b"plan")

    monkeypatch.setattr(build, "build_or_reuse_plan", fake_plan)
    repo = tmp_path / "repo"
    assert build.main(["--model-repository", str(repo), "--engine", "trt", "--max-batch", "8",
                       "--precision", "fp32", "--topk", "20", "--tuned", str(gpu_tuned)]) == 0
    staged = build.staging_for(repo) / spec.ENGINE_NAME / "model.onnx"  # built there, then moved in
    assert asked == {"onnx": staged, "precision": "fp32", "max_batch": 32, "had_plan": False}
    engine = config(repo, spec.ENGINE_NAME)
    assert engine.platform == "tensorrt_plan" and engine.max_batch_size == 32
    assert engine.instance_group[0].count == 1
    assert engine.dynamic_batching.max_queue_delay_microseconds == 1000
    assert "intra_op_threads" not in params(engine), "CPU tuning must not leak into the plan's config"
    assert config(repo, spec.ENSEMBLE_NAME).max_batch_size == 8
    assert not (repo / spec.ENGINE_NAME / "1" / "model.onnx").exists()
    assert configs.engine_onnx(repo) == repo / spec.ENGINE_NAME / "model.onnx", \
        "the perf tools must find the plan's source graph"
    assert configs.engine_onnx(repo).is_file() and not build.staging_for(repo).exists()
    assert build.main(["--model-repository", str(repo), "--engine", "trt", "--topk", "20"]) == 0
    assert asked["had_plan"], "a rebuild must find the plan it replaces, to keep it if it still fits"


def test_a_failed_rebuild_leaves_the_repository_as_it_was_and_a_good_one_no_other_flavour(
        tmp_path, monkeypatch, capsys):
    from rtmo_triton.build.packages import PackagingError

    repo = tmp_path / "repo"
    args = ["--model-repository", str(repo), "--pythons", "none", "--topk", "20"]
    assert build.main([*args, "--engine", "onnx"]) == 0

    def files():
        return {str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*")) if p.is_file()}

    before = files()

    def fail(repo, name, **kwargs):
        raise PackagingError(f"pip could not pack {name} (as when a wheel is missing)")

    with monkeypatch.context() as m:
        m.setattr(build, "install_python_model", fail)
        assert build.main([*args, "--engine", "torch"]) == 2
    assert "pip could not pack" in capsys.readouterr().err
    assert files() == before, "a failed build must not touch the repository"
    assert not build.staging_for(repo).exists()

    assert build.main([*args, "--engine", "torch"]) == 0
    engine = repo / spec.ENGINE_NAME / "1"
    assert (engine / "model.pt").is_file() and not (engine / "model.onnx").exists()
    assert params(config(repo, spec.ENGINE_NAME))["engine_file"] == "model.pt"
    assert sorted(p.name for p in repo.iterdir()) == sorted(
        [spec.ENSEMBLE_NAME, spec.PREPROCESS_NAME, spec.ENGINE_NAME, spec.DECODE_NAME])


@pytest.mark.parametrize("text", ['{"rtmo_engine": {"instance": 2}}', '[1, 2]', '{"rtmo_engine": null}'])
def test_a_bad_tuned_file_stops_the_build_before_any_work(tmp_path, capsys, text):
    tuned = tmp_path / "tuned.json"
    tuned.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        build.parse_args(["--tuned", str(tuned)])
    assert exit_info.value.code == 2 and f"--tuned {tuned}: not a tuned file" in capsys.readouterr().err


def test_foreign_checkpoint_is_refused_cleanly(tmp_path, capsys):
    bad = tmp_path / "not_a_checkpoint.pth"
    bad.write_bytes(b"hello")
    assert build.main(["--checkpoint", str(bad), "--model-repository", str(tmp_path / "r"),
                       "--engine", "onnx"]) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "r" / spec.ENSEMBLE_NAME / "config.pbtxt").exists()


def test_launcher_supplies_backend_directory_and_libraries():
    root = tritonserver.pytriton_root()
    if root is None:
        pytest.skip("nvidia-pytriton not installed (run make setup)")
    argv, env = tritonserver.command(["--model-repository", "/x"])
    assert argv[0].endswith("bin/tritonserver") and argv[-2:] == ["--model-repository", "/x"]
    assert argv[1] == f"--backend-directory={root / 'backends'}"
    assert (root / "backends" / "python" / tritonserver.STUB).exists()
    assert "nvidia_pytriton.libs" in env["LD_LIBRARY_PATH"]
    assert not {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"} & set(env), "the repository brings its packages"
    assert ".venv" not in env["PATH"]
    argv, _ = tritonserver.command(["--backend-directory=/mine"])
    assert argv[1:] == ["--backend-directory=/mine"]


def test_packed_packages_are_reused_not_packed_again(tmp_path):
    """A new checkpoint or engine rebuilds the repository, never the packages: same pins, same archive."""
    from rtmo_triton.build.packages import packed_archive

    said = []
    first = packed_archive(spec.ENGINE_NAME, CONTAINER_PYTHON, build.DEFAULT_WORKSPACE, log=said.append)
    stamp = first.stat().st_mtime_ns
    again = packed_archive(spec.ENGINE_NAME, CONTAINER_PYTHON, build.DEFAULT_WORKSPACE, log=said.append)
    assert again == first and again.stat().st_mtime_ns == stamp
    assert "reused" in said[-1]


def test_a_non_editable_install_builds_a_repository(tmp_path):
    """`pip install .` puts the served code and the shims in the package: a build from the installed
    package, run outside the checkout, needs nothing of the checkout."""
    root = Path(__file__).resolve().parents[1]
    source, wheel_dir, target = tmp_path / "source", tmp_path / "wheel", tmp_path / "site"
    source.mkdir()  # setuptools builds in the source tree: a copy keeps the checkout clean
    shutil.copy(root / "pyproject.toml", source)
    shutil.copytree(root / "rtmo_triton", source / "rtmo_triton",
                    ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheel_dir, source], check=True)
    subprocess.run([*pip, "install", "--no-deps", "--target", target, *wheel_dir.glob("*.whl")], check=True)
    env = dict(os.environ, PYTHONPATH=str(target))
    code = ("import rtmo_triton, sys; from rtmo_triton.build.repository import main; "
            f"assert rtmo_triton.__file__.startswith({str(target)!r}), rtmo_triton.__file__; "
            f"sys.exit(main(['--model-repository', 'repo', '--engine', 'onnx', '--pythons', 'none', "
            f"'--workspace', {str(root / 'build')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in (spec.PREPROCESS_NAME, spec.ENGINE_NAME, spec.DECODE_NAME):
        assert (tmp_path / "repo" / name / "1" / "rtmo_triton" / "served" / "models" / f"{name}.py").is_file()


def test_an_interpreter_a_package_dropped_gets_its_last_release():
    from rtmo_triton.build.packages import LAST_RELEASE_FOR, SERVED_PACKAGES, pins_for

    for python, older in LAST_RELEASE_FOR.items():
        pins = dict(p.split("==") for p in pins_for(spec.ENGINE_NAME, python))
        assert all(pins[name] == version for name, version in older.items() if name in pins)
    assert pins_for(spec.ENGINE_NAME, "3.11") == SERVED_PACKAGES[spec.ENGINE_NAME]


def test_the_queue_holds_four_batches_of_whatever_size_unless_told():
    assert build.parse_args([]).max_queue == spec.DEFAULT_MAX_QUEUE == 4 * spec.DEFAULT_MAX_BATCH
    assert build.parse_args(["--max-batch", "1"]).max_queue == 4
    assert build.parse_args(["--max-batch", "32", "--max-queue", "0"]).max_queue == 0
