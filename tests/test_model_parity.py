"""Our PyTorch RTMO against tensors dumped from mmpose 1.3.2 (rtmo-t, random weights)."""
import numpy as np
import pytest
import torch

from rtmo_triton.model import load_checkpoint
from rtmo_triton.served.postprocess import softmax_integral
from rtmo_triton.spec import NUM_BINS

from .golden import CHECKPOINT_T, LAYER_IDS, fixture_ids, load_output

REL_TOL = 1e-4


@pytest.fixture(scope="module")
def model_t():
    model, info = load_checkpoint(CHECKPOINT_T)
    assert info.variant == "t" and info.num_keypoints == 17 and not info.deploy_form
    return model


def rel_err(a: torch.Tensor, ref: np.ndarray) -> float:
    return float(np.abs(a.numpy() - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("name", fixture_ids())
def test_backbone_neck_head_match_reference(model_t, name):
    ref = load_output(name)
    with torch.no_grad():
        feats = model_t.backbone(torch.from_numpy(ref["input"]))
        neck = model_t.neck(feats)
        cls, box, vis, pose = model_t.head.head_module(neck)
    ours = {f"backbone_out{i}": f for i, f in enumerate(feats)}
    ours |= {f"neck_out{i}": f for i, f in enumerate(neck)}
    for key, maps in (("cls_scores", cls), ("bbox_preds", box), ("kpt_vis", vis), ("pose_vecs", pose)):
        ours |= {f"{key}_s{s}": m for m, s in zip(maps, (16, 32))}
    # every fixture keeps the head's score, box and visibility maps; LAYER_IDS keep every layer
    kept = [k for k in ours if k in ref]
    assert len(kept) == len(ours) if name in LAYER_IDS else len(kept) >= 6, f"{name} lacks layers: {kept}"
    errors = {k: rel_err(ours[k], ref[k]) for k in kept}
    worst = max(errors, key=errors.get)
    print(f"{name}: worst relative error {errors[worst]:.2e} ({worst})")
    assert errors[worst] <= REL_TOL, f"{worst}: relative error {errors[worst]:.2e}"


@pytest.mark.parametrize("name", fixture_ids())
def test_dcc_keypoints_match_reference(model_t, name):
    """DCC logits from our head, decoded by our numpy integral, equal the reference DCC."""
    ref = load_output(name)
    cs = torch.from_numpy(ref["dcc_bbox_cs"])
    with torch.no_grad():
        pose, grids = torch.from_numpy(ref["dcc_pose_vecs"]), torch.from_numpy(ref["dcc_grids"])
        xl, yl = model_t.head.dcc(pose, cs, grids)
    assert xl.shape[-1] == NUM_BINS[0] and yl.shape[-1] == NUM_BINS[1]
    c = ref["dcc_bbox_cs"]
    bins = [np.linspace(-0.5, 0.5, n, dtype=np.float32) for n in NUM_BINS]
    kx = softmax_integral(xl.numpy(), bins[0], c[:, 0], c[:, 2])
    ky = softmax_integral(yl.numpy(), bins[1], c[:, 1], c[:, 3])
    err = np.abs(np.stack((kx, ky), -1) - ref["dcc_keypoints"])
    assert np.percentile(err, 99) < 0.05 and err.max() < 1.0
