"""s, m and l: no goldens exist, so check the architecture against the paper's
parameter counts and that an official-layout state dict loads, exports and runs."""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from rtmo_triton.build.export import export_onnx, onnx_metadata
from rtmo_triton.model import load_checkpoint, random_model
from rtmo_triton.model.deploy import DeployRTMO
from rtmo_triton.spec import ENGINE_INPUT, ENGINE_INPUT_DTYPE, ENGINE_OUTPUTS, VARIANTS

# RTMO paper / mmpose model zoo, millions of parameters of the training model
PAPER_PARAMS_M = {"t": 6.83, "s": 9.87, "m": 22.53, "l": 44.69}


def official_layout(variant: str, num_keypoints: int = 17) -> dict[str, torch.Tensor]:
    """A random state dict with every key an official checkpoint has, training-only ones too."""
    state = random_model(variant, seed=1, num_keypoints=num_keypoints).state_dict()
    ch = state["head.head_module.out_pose.0.weight"].shape[1]
    pose = state["head.dcc.pose_to_kpts.0.weight"].shape[1]
    for lvl in (0, 1):
        state[f"head.head_module.out_kpt_reg.{lvl}.weight"] = torch.randn(2 * num_keypoints, ch, 1, 1)
        state[f"head.head_module.out_kpt_reg.{lvl}.bias"] = torch.randn(2 * num_keypoints)
    state["head.dcc.sigma_fc.0.weight"] = torch.randn(num_keypoints, pose)
    state["head.dcc.sigma_fc.0.bias"] = torch.randn(num_keypoints)
    state["head.dcc.sigma_fc.2.scale"] = torch.tensor(0.1)
    state["head.loss_oks.sigmas"] = torch.rand(num_keypoints)
    return state


def count_params(state: dict[str, torch.Tensor]) -> float:
    skip = ("running_mean", "running_var", "num_batches_tracked", "bins", "dim_t", "loss_oks")
    return sum(t.numel() for k, t in state.items() if not k.endswith(skip) and "loss_oks" not in k) / 1e6


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parameter_count_matches_paper(variant):
    assert count_params(official_layout(variant)) == pytest.approx(PAPER_PARAMS_M[variant], abs=0.006)


@pytest.mark.parametrize("variant", ["s", "m", "l"])
def test_load_export_run(tmp_path, variant):
    ckpt = tmp_path / f"rtmo-{variant}.pth"
    torch.save({"meta": {"note": "random"}, "state_dict": official_layout(variant)}, ckpt)
    model, info = load_checkpoint(ckpt)
    assert (info.variant, info.num_keypoints) == (variant, 17)
    size = VARIANTS[variant].input_size
    x = np.random.default_rng(0).integers(0, 256, (2, 3, size, size), dtype=ENGINE_INPUT_DTYPE)
    with torch.no_grad():
        expected = DeployRTMO(model, 20)(torch.from_numpy(x))
    path = tmp_path / f"rtmo-{variant}.onnx"
    export_onnx(load_checkpoint(ckpt)[0], path, topk=20)
    assert onnx_metadata(path)["variant"] == variant
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(list(ENGINE_OUTPUTS), {ENGINE_INPUT: x})
    assert got[0].shape == (2, 20) and got[3].shape == (2, 20, 17, 192) and got[4].shape == (2, 20, 17, 256)
    # same candidates, same numbers (BN folding changes only rounding, which may swap the order of
    # candidates whose scores tie to within that rounding: each box is matched among its ties)
    scores_e, boxes_e = expected[0].numpy(), expected[1].numpy()
    np.testing.assert_allclose(got[0], scores_e, atol=1e-4)
    for img in range(len(x)):
        for score, box in zip(got[0][img], got[1][img]):
            ties = np.abs(scores_e[img] - score) <= 1e-4
            err = np.abs(boxes_e[img][ties] - box) - 1e-3 * np.abs(box)
            assert (err <= 1e-2).all(-1).any(), f"image {img}: box {box} (score {score}) not in the reference"


def test_crowdpose_keypoint_count(tmp_path):
    ckpt = tmp_path / "crowdpose.pth"
    torch.save({"state_dict": official_layout("s", num_keypoints=14)}, ckpt)
    _, info = load_checkpoint(ckpt)
    assert info.num_keypoints == 14
