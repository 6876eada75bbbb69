"""Development and test tools that drive a real tritonserver: ``TritonServer`` (a server on free
loopback ports), ``soak``, ``overload`` and the GPU check (``gpu_check`` and its sections).

They run from a checkout and share its inputs: the fixtures, the benchmarks' photo, the sample image.
"""
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
FIXTURES = CHECKOUT / "tests" / "fixtures"
CROWD_PHOTO = FIXTURES / "images" / "crowdpose" / "103319.jpg"
"""A crowd, what RTMO is for: the benchmarks' input."""
SAMPLE_IMAGE = CHECKOUT / "samples" / "synthetic_640x480.jpg"
