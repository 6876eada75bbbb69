"""Our PyTorch RTMO: loads official mmpose checkpoints unchanged."""
from .checkpoint import CheckpointError, CheckpointInfo, load_checkpoint, random_model
from .rtmo import RTMO, HeadMaps, build_rtmo, cell_priors

__all__ = [
    "RTMO", "CheckpointError", "CheckpointInfo", "HeadMaps", "build_rtmo", "cell_priors",
    "load_checkpoint", "random_model",
]
