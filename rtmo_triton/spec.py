"""The one place where RTMO's fixed facts live.

Everything else (the PyTorch model, the export, the Triton configs, the
clients, the tests) imports these names instead of repeating literals.
"""
from __future__ import annotations

from dataclasses import dataclass

# --- architecture -----------------------------------------------------------

FEATMAP_STRIDES: tuple[int, ...] = (16, 32)
"""Strides of the two head levels; cells are flattened stride-16 first."""

NUM_BINS: tuple[int, int] = (192, 256)
"""DCC bins along x and y."""

BBOX_PADDING = 1.25
"""The DCC looks at the box grown by this factor (bbox_cs)."""

SOFTMAX_CLAMP = 5e4
SOFTMAX_EPS = 1e-8
"""The reference softmax clamps logits and adds EPS to its denominator."""

PAD_VALUE = 114
"""Grey level of the letterbox border (same on all three BGR channels)."""


@dataclass(frozen=True)
class Variant:
    """Width and depth of one RTMO size; every channel count derives from them."""

    name: str
    widen: float
    deepen: float
    input_size: int
    """Square model input, pixels."""

    @property
    def pose_vec_channels(self) -> int:
        return int(512 * self.widen)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("t", 0.375, 0.33, 416),
        Variant("s", 0.5, 0.33, 640),
        Variant("m", 0.75, 0.67, 640),
        Variant("l", 1.0, 1.0, 640),
    )
}

# --- keypoint sets -----------------------------------------------------------


@dataclass(frozen=True)
class KeypointSet:
    """Names and drawing skeleton of one dataset's keypoints."""

    dataset: str
    names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]

    @property
    def num_keypoints(self) -> int:
        return len(self.names)


def _links(names: tuple[str, ...], pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[int, int], ...]:
    index = {n: i for i, n in enumerate(names)}
    return tuple((index[a], index[b]) for a, b in pairs)


_LIMBS = (
    ("left_ankle", "left_knee"), ("left_knee", "left_hip"),
    ("right_ankle", "right_knee"), ("right_knee", "right_hip"),
    ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"),
    ("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"),
    ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"),
)
_BODY = (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
_COCO_NAMES = ("nose", "left_eye", "right_eye", "left_ear", "right_ear") + _BODY
_CROWDPOSE_NAMES = _BODY + ("top_head", "neck")

COCO = KeypointSet(
    "coco",
    _COCO_NAMES,
    _links(_COCO_NAMES, _LIMBS + (
        ("left_eye", "right_eye"), ("nose", "left_eye"), ("nose", "right_eye"),
        ("left_eye", "left_ear"), ("right_eye", "right_ear"),
        ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
    )),
)
CROWDPOSE = KeypointSet(
    "crowdpose",
    _CROWDPOSE_NAMES,
    _links(_CROWDPOSE_NAMES, _LIMBS + (
        ("top_head", "neck"), ("right_shoulder", "neck"), ("left_shoulder", "neck"),
    )),
)
KEYPOINT_SETS: dict[int, KeypointSet] = {s.num_keypoints: s for s in (COCO, CROWDPOSE)}
"""Checkpoints say how many keypoints they predict; the count picks the set."""

NUM_KEYPOINTS = COCO.num_keypoints
"""The public contract's default (body7 and coco checkpoints)."""

# --- inference defaults -------------------------------------------------------

DEFAULT_SCORE_THR = 0.1
DEFAULT_NMS_THR = 0.65
"""The official test_cfg of every RTMO config."""

DEFAULT_TOPK = 100
"""Candidate cells the engine hands to the decoder per image (see README, 'K')."""

BENCHMARK_PEOPLE = 10
"""People per image (median over the calibration images) that the benchmark form of the random weights
is calibrated for (``model.checkpoint.benchmark_model``, ``make build-engines BENCHMARK=1``): a realistic
scene, where plain random weights pass every one of the K candidates and so load the decoder and the
responses with K people per image."""

PRECISIONS = ("fp16", "fp32")
"""GPU compute of the trt and torch engines: fp16 keeps the DCC bin code and box decoding FP32; fp32
is without TF32."""
DEFAULT_PRECISION = "fp16"

JPEG_DECODERS = ("torchvision", "nvimgcodec")
"""The batched JPEG decoders of the GPU-resident preprocess (``served.gpu.jpeg_decoders``)."""
DEFAULT_JPEG_DECODER = "torchvision"
"""On the GPU hosts' images already; nvImageCodec is measured against it by ``make gpu-check``."""

AUTO_THREADS = "auto"
"""Engine threads left to the serving host, decided at load time (``served.cpus.engine_threads``)."""

DEFAULT_VARIANT = "s"
DEFAULT_MAX_BATCH = 8
QUEUE_BATCHES = 4
"""Requests each composing model holds waiting, in batches of ``max_batch_size``; more are refused at
once as busy (HTTP 503, gRPC UNAVAILABLE) instead of queueing without bound. Four batches: bursts
pass, a sustained overload gets a prompt answer (see README, 'Overload')."""


def default_max_queue(max_batch: int) -> int:
    return QUEUE_BATCHES * max_batch


DEFAULT_MAX_QUEUE = default_max_queue(DEFAULT_MAX_BATCH)
DEFAULT_MAX_PIXELS = 40_000_000
"""Declared image area above which an image is refused before decoding."""


def num_cells(input_size: int) -> int:
    """Head cells over both levels for a square input."""
    return sum((input_size // s) ** 2 for s in FEATMAP_STRIDES)


def served_topk(topk: int, input_size: int) -> int:
    """K as served: more candidates than the head has cells means every cell."""
    return min(topk, num_cells(input_size))


# --- tensor names (the contracts between the Triton models) -------------------

ENGINE_INPUT = "input"
ENGINE_INPUT_DTYPE = "uint8"
"""The letterboxed image is integer-valued (a bilinear warp of 8-bit pixels into 8-bit
pixels), so UINT8 carries it exactly at a quarter of FP32's bytes; the graph casts to float."""
ENGINE_OUTPUTS = ("scores", "boxes", "kpt_vis", "x_logits", "y_logits")


def engine_output_shapes(topk: int, num_keypoints: int) -> dict[str, tuple[int, ...]]:
    """Per-image shapes of the engine's outputs (batch dimension excluded), in ``ENGINE_OUTPUTS`` order:
    the ONNX graph pins them and the Triton configs declare them."""
    k, j = topk, num_keypoints
    shapes = ((k,), (k, 4), (k, j), (k, j, NUM_BINS[0]), (k, j, NUM_BINS[1]))
    return dict(zip(ENGINE_OUTPUTS, shapes, strict=True))

DEFAULT_REPOSITORY = "model_repository"
"""Where ``make build-engines`` writes the served repository, relative to the checkout."""
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002, "health": 8003}
"""Triton's own defaults, and rtmo-serve's guard (``/ready``, ``/live``) next to them."""

CUDA_MEMORY_POOL_BYTES = 1 << 30
"""Triton's CUDA memory pool per GPU (its own default: 64 MiB). GPU tensors that Python models hand each
other travel through it: a batch of 8 is 9.4 MiB of letterboxed input and 23 MiB of engine outputs, for
each request in flight between two models."""


def cuda_pool_flag(gpu: int) -> str:
    """The tritonserver flag sizing GPU ``gpu``'s pool to ``CUDA_MEMORY_POOL_BYTES``."""
    return f"--cuda-memory-pool-byte-size={gpu}:{CUDA_MEMORY_POOL_BYTES}"


MODEL_VERSION = "1"
"""The one version folder of every model in the repository."""

ENSEMBLE_NAME = "rtmo"
PREPROCESS_NAME = "rtmo_preprocess"
ENGINE_NAME = "rtmo_engine"
DECODE_NAME = "rtmo_decode"

ENSEMBLE_INPUT = "IMAGE"
ENSEMBLE_OUTPUTS = ("NUM_PEOPLE", "BOXES", "SCORES", "KEYPOINTS", "KEYPOINT_SCORES")
HOST_DECODES_METRIC = "rtmo_preprocess_host_decodes"
"""Counter on Triton's /metrics (``PREPROCESS=gpu``): images its preprocess decoded on the host CPU. With
a GPU decoder, the images it cannot take (PNG, WebP, CMYK or progressive JPEG, a stream it refused): the
share of traffic that misses the GPU path."""


class Param:
    """Names of the ``parameters`` the build writes into the configs and the Python models (and, for
    the ensemble's, clients) read back."""

    INPUT_SIZE = "input_size"
    MAX_PIXELS = "max_pixels"
    ENGINE_FILE = "engine_file"
    INTRA_OP_THREADS = "intra_op_threads"
    PRECISION = "precision"
    CUDA_GRAPHS = "cuda_graphs"
    JPEG_DECODER = "jpeg_decoder"
    NEEDS_TORCH = "needs_torch"  # YES on a model importing PyTorch (serve/tritonserver.py finds one)
    SCORE_THR = "score_thr"
    NMS_THR = "nms_thr"
    NUM_KEYPOINTS = "num_keypoints"
    KEYPOINT_DATASET = "keypoint_dataset"
    KEYPOINT_NAMES = "keypoint_names"
    # the ensemble's description of the served model, for people and tools
    VARIANT = "variant"
    TOPK = "topk"
    ENGINE_FLAVOUR = "engine_flavour"
    PREPROCESS = "preprocess"
    MAX_QUEUE = "max_queue"
    SKELETON = "skeleton"
    RANDOM_WEIGHTS = "random_weights"
    WEIGHTS = "weights"
    BENCHMARK_PEOPLE = "benchmark_people"  # only on benchmark weights: the people per image calibrated for
    CHECKPOINT = "checkpoint"
    CHECKPOINT_SHA256 = "checkpoint_sha256"


class OnnxMeta:
    """Keys of the metadata the ONNX export writes into the graph, which the TensorRT build and the
    perf tools read back."""

    VARIANT = "variant"
    INPUT_SIZE = "input_size"
    TOPK = "topk"
    NUM_KEYPOINTS = "num_keypoints"
    INPUT_DTYPE = "input_dtype"
    PRECISION = "precision"
    OPSET = "opset"


YES, NO = "yes", "no"
"""A yes/no parameter's two values (Triton's parameters are strings)."""

AFFINE = "affine"
AFFINE_FIELDS = ("scale", "offset_x", "offset_y", "orig_w", "orig_h", "input_size")
"""Preprocess → decode, FP32 [len(AFFINE_FIELDS)]: p_input = p_image * scale + offset."""
