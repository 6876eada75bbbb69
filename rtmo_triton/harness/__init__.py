"""Development and test tools that drive a real tritonserver: ``TritonServer`` (a server on free
loopback ports), ``soak``, ``overload`` and the GPU check (``gpu_check`` and its sections).

They run from a checkout, whose inputs they share: the fixtures and the sample image."""
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
FIXTURES = CHECKOUT / "tests" / "fixtures"
SAMPLE_IMAGE = CHECKOUT / "samples" / "synthetic_640x480.jpg"
