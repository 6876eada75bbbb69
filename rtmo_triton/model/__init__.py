"""Our PyTorch RTMO: loads official mmpose checkpoints unchanged."""
from .checkpoint import (
    BenchmarkCalibration,
    CheckpointError,
    CheckpointInfo,
    benchmark_model,
    load_checkpoint,
    random_model,
)
from .rtmo import RTMO, HeadMaps, build_rtmo, cell_priors

__all__ = [
    "RTMO", "BenchmarkCalibration", "CheckpointError", "CheckpointInfo", "HeadMaps",
    "benchmark_model", "build_rtmo", "cell_priors", "load_checkpoint", "random_model",
]
