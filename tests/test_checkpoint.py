"""Loading official checkpoints: formats accepted, and clear errors for the rest."""
import numpy as np
import pytest
import torch

from rtmo_triton.model import CheckpointError, load_checkpoint, random_model
from rtmo_triton.model.checkpoint import IGNORED
from rtmo_triton.model.fuse import to_deploy_form

from .golden import CHECKPOINT_T, load_output


@pytest.fixture(scope="module")
def official_state():
    if not CHECKPOINT_T.is_file():
        pytest.skip(f"reference fixtures not found at {CHECKPOINT_T}")
    return torch.load(CHECKPOINT_T, weights_only=True)["state_dict"]


def save(path, obj):
    torch.save(obj, path)
    return path


def test_training_only_tensors_are_skipped_by_name(official_state):
    _, info = load_checkpoint(CHECKPOINT_T)
    assert info.ignored_keys
    assert all(k.startswith(tuple(IGNORED)) for k in info.ignored_keys)
    reg = {k for k in official_state if k.startswith("head.head_module.out_kpt_reg.")}
    assert reg <= set(info.ignored_keys)


def test_plain_state_dict_loads(tmp_path, official_state):
    model, info = load_checkpoint(save(tmp_path / "plain.pth", dict(official_state)))
    assert info.variant == "t"


def test_deploy_form_checkpoint_loads_and_agrees(tmp_path, official_state):
    """A checkpoint saved after mmpose's switch_to_deploy (RepVGG and DCC BN folded)."""
    reference, _ = load_checkpoint(CHECKPOINT_T)
    deployed = to_deploy_form(load_checkpoint(CHECKPOINT_T)[0])
    state = deployed.state_dict()
    assert any("conv_reparam" in k for k in state) and "head.dcc.pose_to_kpts.weight" in state
    state["neck.pos_enc_0"] = torch.zeros(1, 169, 256)  # mmpose caches this buffer at deploy time
    model, info = load_checkpoint(save(tmp_path / "deploy.pth", {"meta": {}, "state_dict": state}))
    assert info.deploy_form
    x = torch.from_numpy(load_output("synth_640x480")["input"])
    with torch.no_grad():
        for a, b in zip(reference(x), model(x)):
            for ma, mb in zip(a, b):
                np.testing.assert_allclose(mb.numpy(), ma.numpy(), rtol=1e-3, atol=1e-4)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")


def test_empty_file(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pth")


def test_truncated_file(tmp_path):
    data = CHECKPOINT_T.read_bytes() if CHECKPOINT_T.is_file() else b""
    if not data:
        pytest.skip("fixture checkpoint missing")
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pth")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.pth").write_text("these are not weights\n" * 10)
    with pytest.raises(CheckpointError, match="not a weights-only|unreadable as a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "notes.pth")


def test_not_a_state_dict(tmp_path):
    with pytest.raises(CheckpointError, match="neither an mmengine checkpoint"):
        load_checkpoint(save(tmp_path / "list.pth", [1, 2, 3]))


def test_foreign_model(tmp_path):
    resnet_like = {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}
    with pytest.raises(CheckpointError, match="not an RTMO checkpoint.*conv1.weight"):
        load_checkpoint(save(tmp_path / "resnet.pth", {"state_dict": resnet_like}))


def test_missing_and_unexpected_keys_are_listed(tmp_path, official_state):
    state = dict(official_state)
    del state["neck.lateral_convs.0.bn.weight"]
    state["head.extra_branch.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(save(tmp_path / "bad.pth", {"state_dict": state}))
    msg = str(err.value)
    assert "missing keys (1)" in msg and "neck.lateral_convs.0.bn.weight" in msg
    assert "unexpected keys (1)" in msg and "head.extra_branch.weight" in msg


def test_shape_mismatch_is_listed(tmp_path, official_state):
    state = dict(official_state)
    state["head.dcc.x_fc.weight"] = torch.zeros(64, 128)
    with pytest.raises(CheckpointError, match=r"head.dcc.x_fc.weight: checkpoint \(64, 128\)"):
        load_checkpoint(save(tmp_path / "shape.pth", {"state_dict": state}))


def test_unknown_width(tmp_path):
    state = random_model("t").state_dict()
    state["backbone.stem.conv.conv.weight"] = torch.zeros(40, 12, 3, 3)
    with pytest.raises(CheckpointError, match="matches no RTMO variant"):
        load_checkpoint(save(tmp_path / "w.pth", state))


def test_a_keypoint_set_we_cannot_name_is_refused_at_load(tmp_path):
    state = random_model("t", num_keypoints=21).state_dict()
    with pytest.raises(CheckpointError, match=r"predicts 21 keypoints; served keypoint sets: 17 \(coco\), "
                                              r"14 \(crowdpose\)"):
        load_checkpoint(save(tmp_path / "k21.pth", state))


def test_random_weights_depend_on_the_seed_alone():
    """A build without a checkpoint must serve the same model every time (and keep its TensorRT plan)."""
    first = random_model("t", seed=0).state_dict()
    torch.rand(7)  # whatever else used PyTorch's global generator in between
    again, other = random_model("t", seed=0).state_dict(), random_model("t", seed=1).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
