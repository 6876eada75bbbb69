"""Client side of the `rtmo` ensemble: requests, per-image people, JSON and overlays.

Typical use (a test given a running server)::

    from rtmo_triton.client import infer
    people = infer("127.0.0.1:8001", "grpc", [open("a.jpg", "rb").read()], wait_s=30)

``tritonclient`` is imported only when a request is made, so the JSON and
overlay helpers work without it.
"""
from .files import IMAGE_EXTENSIONS, ImageFile, find_images
from .infer import infer, infer_images
from .overlay import DEFAULT_KPT_THR, draw_overlay
from .people import People, parse_outputs
from .records import keypoint_names, people_record
from .transport import (
    DEFAULT_PORTS,
    PROTOCOLS,
    Client,
    ModelInfo,
    ModelNotReady,
    ServerUnavailable,
    connect,
    make_request,
    normalize_url,
)

__all__ = [
    "DEFAULT_KPT_THR", "DEFAULT_PORTS", "IMAGE_EXTENSIONS", "PROTOCOLS",
    "ImageFile", "ModelInfo", "ModelNotReady", "People", "ServerUnavailable",
    "Client", "connect", "draw_overlay", "find_images", "infer", "infer_images",
    "keypoint_names", "make_request", "normalize_url", "parse_outputs", "people_record",
]
