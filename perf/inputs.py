"""The benchmark's real JPEG inputs, and perf_analyzer ``--input-data`` files made from them.

One CrowdPose fixture photo (a crowd, as the served model is for), resized to each benchmark size
(landscape, the aspect ratio of most cameras) and encoded at quality 90.
"""
from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import cv2
import numpy as np

from rtmo_triton import spec

CHECKOUT = Path(__file__).resolve().parents[1]
FIXTURES = CHECKOUT / "tests" / "fixtures"
CROWD_PHOTO = FIXTURES / "images" / "crowdpose" / "103319.jpg"
"""A crowd, what RTMO is for: the benchmarks' input."""
SAMPLE_IMAGE = CHECKOUT / "samples" / "synthetic_640x480.jpg"

SIZES: tuple[tuple[int, int], ...] = ((640, 480), (1280, 720), (1920, 1080))
JPEG_QUALITY = 90


def benchmark_jpegs() -> dict[tuple[int, int], bytes]:
    photo = cv2.imread(str(CROWD_PHOTO), cv2.IMREAD_COLOR)
    if photo is None:
        raise FileNotFoundError(CROWD_PHOTO)
    return {
        (w, h): cv2.imencode(".jpg", cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA),
                             [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()
        for w, h in SIZES
    }


def bytes_element(data: bytes) -> dict[str, str]:
    """One BYTES element for perf_analyzer: b64 of Triton's serialized form (uint32 length + bytes)."""
    return {"b64": base64.b64encode(struct.pack("<I", len(data)) + data).decode()}


def tensor_element(array: np.ndarray) -> dict:
    return {"content": array.ravel().tolist(), "shape": list(array.shape)}


def write_input_data(out_dir: Path, engine_onnx: Path | None = None) -> dict[str, dict[str, Path]]:
    """``{size label: {model: json path}}`` for the ensemble and, given the ONNX, each composing model
    (the engine's input and the decoder's inputs are what the served stages hand on for that JPEG)."""
    from rtmo_triton.build.export import onnx_metadata
    from rtmo_triton.served.onnx_engine import OnnxEngine
    from rtmo_triton.served.preprocess import preprocess

    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Path]] = {}
    session = OnnxEngine(engine_onnx) if engine_onnx is not None else None
    size = int(onnx_metadata(engine_onnx)[spec.OnnxMeta.INPUT_SIZE]) if engine_onnx is not None else 0
    for (w, h), data in benchmark_jpegs().items():
        label = f"{w}x{h}"
        made = files[label] = {}
        made[spec.ENSEMBLE_NAME] = made[spec.PREPROCESS_NAME] = _dump(
            out_dir / f"{spec.ENSEMBLE_NAME}_{label}.json", {spec.ENSEMBLE_INPUT: bytes_element(data)})
        if session is None:
            continue
        x, affine = preprocess(data, size, spec.DEFAULT_MAX_PIXELS)
        made[spec.ENGINE_NAME] = _dump(out_dir / f"{spec.ENGINE_NAME}_{label}.json",
                                       {spec.ENGINE_INPUT: tensor_element(x)})
        decode_in = {n: tensor_element(v[0]) for n, v in session.run(x[None]).items()}
        decode_in[spec.AFFINE] = tensor_element(affine)
        made[spec.DECODE_NAME] = _dump(out_dir / f"{spec.DECODE_NAME}_{label}.json", decode_in)
    return files


def _dump(path: Path, row: dict) -> Path:
    path.write_text(json.dumps({"data": [row]}))
    return path
