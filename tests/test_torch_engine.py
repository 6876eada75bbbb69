"""The torch engine flavour on the CPU: the saved deploy graph, the engine, and the served ensemble.

The server runs its Python models with this interpreter (its packages, PyTorch included, as the torch
flavour requires); the repository is the fixture checkpoint at K ≥ every cell and the fixtures'
thresholds, so the served people must equal the reference's within the tolerances the ONNX flavour
meets (tests/test_server.py): the two flavours serve the same people.
"""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from perf.gpu.served import installed_root, launch
from rtmo_triton import spec
from rtmo_triton.build import repository as build
from rtmo_triton.build.export import export_torch
from rtmo_triton.build.packages import SERVED_PACKAGES, TORCH_ENGINE, install_python_model
from rtmo_triton.client import connect, parse_outputs
from rtmo_triton.model import load_checkpoint
from rtmo_triton.model.deploy import DeployRTMO, load_deploy
from rtmo_triton.model.fuse import fold_batchnorm
from rtmo_triton.serve.local import ServerFailed, TritonServer
from rtmo_triton.serve.tritonserver import command
from rtmo_triton.served.bundle import running_python
from rtmo_triton.served.postprocess import decode_batch
from rtmo_triton.served.torch_engine import TorchEngine, set_tf32

from .golden import CHECKPOINT_T, OUTPUT_FILES, assert_people_match, load_output
from .served import KEEP_ALL_CELLS, require_server

THR = load_output(OUTPUT_FILES[0])


@pytest.fixture(scope="module")
def refs():
    return [load_output(p) for p in OUTPUT_FILES]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("torch") / "model.pt"
    model, _ = load_checkpoint(CHECKPOINT_T)
    export_torch(model, path, topk=KEEP_ALL_CELLS, metadata={"checkpoint": "fixture"})
    return path


def test_saved_graph_rebuilds_the_same_network(weights, refs):
    model, _ = load_checkpoint(CHECKPOINT_T)
    expected = DeployRTMO(fold_batchnorm(model), KEEP_ALL_CELLS).eval()
    loaded, info = load_deploy(weights)
    assert (info["variant"], info["num_keypoints"], info["input_size"]) == ("t", 17, 416)
    assert info["topk"] == spec.num_cells(416) and info["metadata"] == {"checkpoint": "fixture"}
    x = torch.from_numpy(refs[0]["input"].astype(np.uint8))
    with torch.no_grad():
        for a, b in zip(expected(x), loaded(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_foreign_file_is_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an RTMO deploy graph.*ENGINE=torch"):
        load_deploy(tmp_path / "other.pt")


def test_tf32_switches_both_cuda_matmuls_and_cudnn_convolutions():
    """FP32 figures on a GPU mean TF32 off in both; cuDNN's convolutions default to TF32."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = matmul.fp32_precision, conv.fp32_precision
    try:
        set_tf32(True)
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
        set_tf32(False)
        assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
    finally:
        matmul.fp32_precision, conv.fp32_precision = before


def test_cpu_engine_people_equal_the_reference(weights, refs):
    engine = TorchEngine(weights, "cpu")
    assert engine.graphs is None and "on cpu, fp32" in engine.describe()
    inputs = [r["input"].astype(spec.ENGINE_INPUT_DTYPE) for r in refs[:3]]
    results = engine.run_requests(inputs)  # one run over three requests, split back
    assert [len(r["scores"]) for r in results] == [1, 1, 1]
    for ref, out in zip(refs, results):
        people = decode_batch({k: v.numpy() for k, v in out.items()}, _affine(ref), float(THR["score_thr"]),
                              float(THR["nms_thr"]))[0]
        assert_people_match(*people.arrays, ref)


def _affine(ref: dict) -> np.ndarray:
    """The letterbox of the reference's image, as the preprocess model sends it."""
    from rtmo_triton.served.letterbox import letterbox

    _, box = letterbox(ref["img_bgr"], 416)
    return box.as_array()[None]


# --- the served ensemble -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("torch-served") / "repo"
    code = build.main(["--checkpoint", str(CHECKPOINT_T), "--model-repository", str(repo),
                       "--engine", "torch", "--pythons", "none", "--topk", str(KEEP_ALL_CELLS), "--score-thr",
                       f"{float(THR['score_thr']):.6g}", "--nms-thr", f"{float(THR['nms_thr']):.6g}",
                       "--workspace", str(repo.parent / "ws")])
    assert code == 0
    return repo


@pytest.fixture(scope="module")
def server(repo):
    require_server()
    with TritonServer(repo, log_path=repo.parent / "tritonserver.log", launch=launch(installed_root())) as s:
        yield s


def test_repository_carries_weights_and_code_not_pytorch(repo):
    engine = repo / spec.ENGINE_NAME
    assert sorted(p.name for p in (engine / "1").iterdir()) == ["model.pt", "model.py", "rtmo_triton"]
    assert f"rtmo_triton.served.models.{TORCH_ENGINE} import" in (engine / "1" / "model.py").read_text()
    assert (engine / "1" / "rtmo_triton" / "model" / "deploy.py").is_file()  # rebuilds the graph
    assert not (repo / spec.DECODE_NAME / "1" / "rtmo_triton" / "model").exists()  # only the engine needs it
    config = text_format.Parse((engine / "config.pbtxt").read_text(), mc.ModelConfig())
    assert config.backend == "python" and config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert (params["engine_file"], params["precision"], params["cuda_graphs"]) == ("model.pt", "fp32", "no")


def test_the_torch_engine_never_carries_pytorch():
    """PyTorch is GBs: the server's interpreter must have it. Only numpy is carried, which Triton's own
    Python-backend utilities import and ``pip install torch`` does not bring."""
    assert [pin.split("==")[0] for pin in SERVED_PACKAGES[TORCH_ENGINE]] == ["numpy"]


@pytest.mark.server
def test_served_people_equal_the_reference(server, refs):
    """All fixture images in one request over HTTP, then one image per request over gRPC, two in flight."""
    images = [cv2.imencode(".png", r["img_bgr"])[1].tobytes() for r in refs]
    http = connect(server.http_url, "http")
    try:
        [outcome] = http.infer([images])
    finally:
        http.close()
    assert outcome.error is None, outcome.error
    grpc = connect(server.grpc_url, "grpc")
    try:
        singles = grpc.infer([[i] for i in images], concurrency=2)
    finally:
        grpc.close()
    people = parse_outputs(outcome.outputs)
    for o in singles:
        assert o.error is None, o.error
        people += parse_outputs(o.outputs)
    for p, ref in zip(people, refs + refs, strict=True):
        err = assert_people_match(p.boxes, p.scores, p.keypoints, p.keypoint_scores, ref)
        assert err["kpt_p99"] <= 0.1
    assert "on cpu, fp32" in server.log_text()


@pytest.mark.server
def test_without_pytorch_in_the_servers_python_the_engine_says_why(repo, tmp_path):
    """The plain launcher runs the system Python, which has no PyTorch: the engine carries numpy for it
    (as a default build does) and fails to load with the reason and the remedy."""
    require_server()
    lonely = tmp_path / "repo"
    shutil.copytree(repo / spec.ENGINE_NAME, lonely / spec.ENGINE_NAME)
    install_python_model(lonely, spec.ENGINE_NAME, pythons=(running_python(),),
                         workspace=build.DEFAULT_WORKSPACE, module=TORCH_ENGINE)
    log = tmp_path / "tritonserver.log"
    with pytest.raises(ServerFailed):
        # the launcher without the repository's flags: it cannot know to hand over this venv's PyTorch
        with TritonServer(lonely, log_path=log, launch=command([]), ready_model=spec.ENGINE_NAME,
                          ready_timeout_s=60):
            pass
    said = log.read_text()
    assert "No module named 'torch'" in said and "never carries PyTorch" in said and "ENGINE=onnx" in said


@pytest.mark.server
def test_a_python_backend_that_corrupts_numpy_2_arrays_is_refused_at_load(repo, tmp_path, monkeypatch):
    """Triton 2.51's Python backend (pybind11 2.10) builds zero-stride arrays under numpy 2: every input
    would repeat its first element. A model running numpy 2 there must refuse to load, naming the fix,
    rather than serve wrong people (the same model loads under the numpy 1 it carries by default)."""
    require_server()
    numpy_2 = "2.2.6"
    monkeypatch.setitem(SERVED_PACKAGES, TORCH_ENGINE, (f"numpy=={numpy_2}",))
    lonely = tmp_path / "repo"
    shutil.copytree(repo / spec.ENGINE_NAME, lonely / spec.ENGINE_NAME)
    install_python_model(lonely, spec.ENGINE_NAME, pythons=(running_python(),),
                         workspace=build.DEFAULT_WORKSPACE, module=TORCH_ENGINE)
    log = tmp_path / "tritonserver.log"
    with pytest.raises(ServerFailed) as failed:
        with TritonServer(lonely, log_path=log, launch=launch(installed_root()), ready_model=spec.ENGINE_NAME,
                          ready_timeout_s=90):
            pass
    said = log.read_text()
    assert f"cannot exchange tensors with numpy {numpy_2}" in said and "[1.0, 1.0, 1.0, 1.0]" in said
    # the launcher's error leads with the cause, not with the option tables Triton prints on its way out
    assert "cannot exchange tensors" in str(failed.value).split("\n...\n")[0]
