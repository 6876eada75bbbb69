"""Image -> letterbox -> deploy graph -> decode, against mmpose's final predictions.

Run twice: the PyTorch deploy graph, and the exported ONNX graph in
onnxruntime (what the CPU server runs), on a batch of all fixture images.
"""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from rtmo_triton.build.export import export_onnx, onnx_metadata
from rtmo_triton.model import load_checkpoint
from rtmo_triton.model.deploy import DeployRTMO
from rtmo_triton.served.letterbox import letterbox
from rtmo_triton.served.postprocess import decode_batch
from rtmo_triton.spec import ENGINE_INPUT, ENGINE_OUTPUTS, num_cells

from .golden import CHECKPOINT_T, OUTPUT_FILES, assert_people_match, load_output

ALL_CELLS = num_cells(416)


@pytest.fixture(scope="module")
def refs():
    return [load_output(p) for p in OUTPUT_FILES]


@pytest.fixture(scope="module")
def batch(refs):
    inputs, boxes = zip(*(letterbox(r["img_bgr"], 416) for r in refs))
    return np.stack(inputs), np.stack([b.as_array() for b in boxes])


def check_all(outputs, affines, refs, label):
    thr = float(refs[0]["score_thr"]), float(refs[0]["nms_thr"])
    for people, ref, path in zip(decode_batch(outputs, affines, *thr), refs, OUTPUT_FILES, strict=True):
        err = assert_people_match(*people.arrays, ref)
        print(f"{label} {path.stem:38s} people {len(people.boxes):3d}  box max {err['box_max']:.4f} px"
              f"  kpt p99 {err['kpt_p99']:.4f} px  kpt max {err.get('kpt_max', 0):.4f} px")


def test_torch_deploy_graph(batch, refs):
    model, _ = load_checkpoint(CHECKPOINT_T)
    deploy = DeployRTMO(model, ALL_CELLS).eval()
    with torch.no_grad():
        outs = deploy(torch.from_numpy(batch[0]))
    check_all({n: o.numpy() for n, o in zip(ENGINE_OUTPUTS, outs)}, batch[1], refs, "torch")


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    model, info = load_checkpoint(CHECKPOINT_T)
    path = tmp_path_factory.mktemp("onnx") / "rtmo-t.onnx"
    export_onnx(model, path, topk=10_000, metadata={"random_weights": "true"})
    return path


def test_onnx_graph(onnx_path, batch, refs):
    meta = onnx_metadata(onnx_path)
    assert meta["variant"] == "t" and meta["topk"] == str(ALL_CELLS) and meta["random_weights"] == "true"
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    outs = dict(zip(ENGINE_OUTPUTS, sess.run(list(ENGINE_OUTPUTS), {ENGINE_INPUT: batch[0]})))
    assert outs["x_logits"].shape == (len(refs), ALL_CELLS, 17, 192)
    check_all(outs, batch[1], refs, "onnx ")
