"""Every ``config.pbtxt`` of the repository, rendered from one description.

The ensemble, preprocess and decode configs are identical for every engine
flavour; only ``rtmo_engine`` differs (``tensorrt_plan`` on a GPU host, or a
Python model running PyTorch or onnxruntime) and even then its tensors come
from the same names and shapes. Configs are built as ``ModelConfig`` protos
and printed by protobuf, so a typo cannot produce a file Triton rejects.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from .. import spec
from ..spec import Param as P
from .flavour import PREPROCESS_PLACES

FLAVOUR_FILES = {"onnx": "model.onnx", "trt": "model.plan", "torch": "model.pt"}
"""Engine file in the version folder, by flavour."""



def engine_onnx(repo: Path) -> Path:
    """The repository's ONNX graph: the served file (ONNX flavour), else the plan's source, which
    ``make build-engines`` keeps beside the version folder where Triton ignores it."""
    served = repo / spec.ENGINE_NAME / spec.MODEL_VERSION / FLAVOUR_FILES["onnx"]
    return served if served.is_file() else repo / spec.ENGINE_NAME / FLAVOUR_FILES["onnx"]


@dataclass(frozen=True)
class Scheduling:
    """How Triton runs one composing model: its copies and how long it waits to fill a batch."""

    instances: int = 1
    max_queue_delay_us: int = 0
    max_batch: int = 0
    """0: the repository's max batch."""
    intra_op_threads: int | None = None
    """onnxruntime threads per CPU-engine instance; None: the repository's ``engine_threads``."""


DEFAULT_SCHEDULING = {
    spec.PREPROCESS_NAME: Scheduling(instances=2, max_queue_delay_us=2000),
    spec.ENGINE_NAME: Scheduling(instances=2),
    spec.DECODE_NAME: Scheduling(instances=2),
}
"""model-analyzer's choice on the CPU (reports/model-analyzer/summary.md): two of each model, a short
batching delay for the letterbox, none for the engine, whose threads follow the serving host's cores."""


def load_scheduling(path: Path | None = None) -> dict[str, Scheduling]:
    """The shipped defaults, overridden per model by a tuned file (``TUNED=``) when given.

    Models the repository does not have are ignored (a tuned file may cover more); an unknown
    setting of a known model is an error, so a misspelt key cannot be silently dropped.
    """
    result = dict(DEFAULT_SCHEDULING)
    if path is not None:
        known = {f.name for f in fields(Scheduling)}
        for name, values in json.loads(path.read_text()).items():
            if name not in result:
                continue
            unknown = sorted(set(values) - known)
            if unknown:
                raise ValueError(f"{path}: {name}: unknown setting(s) {', '.join(unknown)}; "
                                 f"expected {', '.join(sorted(known))}")
            result[name] = replace(result[name], **{k: int(v) for k, v in values.items()})
    return result


@dataclass(frozen=True)
class RepositorySpec:
    """Everything the configs depend on; the build fills it from the model and its arguments."""

    variant: str
    input_size: int
    num_keypoints: int
    topk: int
    flavour: str = "onnx"
    engine_device: str = "cpu"
    """The torch flavour's device: ``cuda`` (``KIND_GPU`` instances) or ``cpu``."""
    engine_precision: str = "fp32"
    """The torch flavour's compute on CUDA: ``fp16`` (the geometry stays FP32) or ``fp32`` (no TF32)."""
    preprocess: str = "cpu"
    """``gpu``: the preprocess and decode models run PyTorch on the engine's device and pass tensors there
    (``KIND_GPU`` beside a GPU engine); ``cpu``: numpy and OpenCV on the host."""
    jpeg_decoder: str = spec.DEFAULT_JPEG_DECODER
    """``preprocess="gpu"``: its batched JPEG decoder (``spec.JPEG_DECODERS``)."""
    max_batch: int = spec.DEFAULT_MAX_BATCH
    score_thr: float = spec.DEFAULT_SCORE_THR
    nms_thr: float = spec.DEFAULT_NMS_THR
    max_pixels: int = spec.DEFAULT_MAX_PIXELS
    max_queue: int = spec.DEFAULT_MAX_QUEUE
    """Waiting requests per composing model before it refuses more as busy; 0: unbounded."""
    engine_threads: int | None = None
    """onnxruntime intra-op threads per CPU-engine instance (0: onnxruntime's default, every core);
    None: a tuned file's choice, else the serving host decides (``spec.AUTO_THREADS``)."""
    scheduling: dict[str, Scheduling] = field(default_factory=lambda: dict(DEFAULT_SCHEDULING))
    provenance: dict[str, str] = field(default_factory=dict)
    """Where the weights came from (checkpoint, sha256, random_weights): shown in the ensemble's config."""

    def __post_init__(self) -> None:
        if self.flavour not in FLAVOUR_FILES:
            raise ValueError(f"engine flavour {self.flavour!r}: expected one of {', '.join(FLAVOUR_FILES)}")
        if self.preprocess not in PREPROCESS_PLACES:
            raise ValueError(f"preprocess {self.preprocess!r}: expected one of "
                             f"{', '.join(PREPROCESS_PLACES)}")
        if self.jpeg_decoder not in spec.JPEG_DECODERS:
            raise ValueError(f"JPEG decoder {self.jpeg_decoder!r}: expected one of "
                             f"{', '.join(spec.JPEG_DECODERS)}")
        if self.max_batch < 1:
            raise ValueError(f"max batch must be ≥ 1, got {self.max_batch}")
        if self.max_queue < 0:
            raise ValueError(f"max queue must be ≥ 0, got {self.max_queue}")
        if not 0 <= self.score_thr < 1 or not 0 < self.nms_thr <= 1:
            raise ValueError(f"thresholds out of range: score {self.score_thr}, nms {self.nms_thr}")

    @property
    def on_gpu(self) -> bool:
        """Whether the engine runs on a GPU (TensorRT, or torch on CUDA)."""
        return self.flavour == "trt" or (self.flavour == "torch" and self.engine_device == "cuda")

    @property
    def keypoints(self) -> spec.KeypointSet:
        return spec.KEYPOINT_SETS[self.num_keypoints]

    def engine_shapes(self) -> dict[str, list[int]]:
        """Per-image shapes of the engine's outputs (the batch dimension is Triton's)."""
        return {n: list(d) for n, d in spec.engine_output_shapes(self.topk, self.num_keypoints).items()}

    def batch_for(self, model: str) -> int:
        return max(self.max_batch, self.scheduling[model].max_batch)

    def intra_op_threads(self) -> int | str:
        """An explicit ``engine_threads`` wins over the tuned file; else the serving host decides."""
        if self.engine_threads is not None:
            return self.engine_threads
        tuned = self.scheduling[spec.ENGINE_NAME].intra_op_threads
        return spec.AUTO_THREADS if tuned is None else tuned


FORCE_CPU_ONLY_INPUT_TENSORS = "FORCE_CPU_ONLY_INPUT_TENSORS"
"""The Python backend's parameter: ``no`` hands a model its inputs in GPU memory where they are."""
FP32, INT32, STRING = mc.TYPE_FP32, mc.TYPE_INT32, mc.TYPE_STRING
ENGINE_INPUT_TYPE = {"uint8": mc.TYPE_UINT8, "float32": mc.TYPE_FP32}[spec.ENGINE_INPUT_DTYPE]


def _tensor(cls, name: str, dtype: int, dims: list[int]):
    return cls(name=name, data_type=dtype, dims=dims)


def _params(config: mc.ModelConfig, values: dict[str, object]) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = str(value)


def _composing(s: RepositorySpec, name: str, backend: str = "python",
               kind: int = mc.ModelInstanceGroup.KIND_CPU) -> mc.ModelConfig:
    sched = s.scheduling[name]
    config = mc.ModelConfig(name=name, backend=backend, max_batch_size=s.batch_for(name))
    config.instance_group.add(count=sched.instances, kind=kind)
    config.dynamic_batching.max_queue_delay_microseconds = sched.max_queue_delay_us
    config.dynamic_batching.default_queue_policy.max_queue_size = s.max_queue
    return config


def _device_resident(s: RepositorySpec, name: str) -> mc.ModelConfig:
    """A preprocess or decode model: a torch one (``PREPROCESS=gpu``) runs on the engine's device and
    takes its inputs where the previous model left them instead of a host copy."""
    if s.preprocess != "gpu":
        return _composing(s, name)
    kind = mc.ModelInstanceGroup.KIND_GPU if s.on_gpu else mc.ModelInstanceGroup.KIND_CPU
    config = _composing(s, name, kind=kind)
    _params(config, {P.NEEDS_TORCH: spec.YES, FORCE_CPU_ONLY_INPUT_TENSORS: spec.NO})
    return config


def _ensemble_outputs(s: RepositorySpec, cls) -> list:
    j = s.num_keypoints
    n_people, boxes, scores, kpts, kpt_scores = spec.ENSEMBLE_OUTPUTS
    return [_tensor(cls, n_people, INT32, [1]), _tensor(cls, boxes, FP32, [-1, 4]),
            _tensor(cls, scores, FP32, [-1]), _tensor(cls, kpts, FP32, [-1, j, 2]),
            _tensor(cls, kpt_scores, FP32, [-1, j])]


def _input_dims(s: RepositorySpec) -> list[int]:
    return [3, s.input_size, s.input_size]


def preprocess_config(s: RepositorySpec) -> mc.ModelConfig:
    config = _device_resident(s, spec.PREPROCESS_NAME)
    config.input.append(_tensor(mc.ModelInput, spec.ENSEMBLE_INPUT, STRING, [1]))
    config.output.extend([_tensor(mc.ModelOutput, spec.ENGINE_INPUT, ENGINE_INPUT_TYPE, _input_dims(s)),
                          _tensor(mc.ModelOutput, spec.AFFINE, FP32, [len(spec.AFFINE_FIELDS)])])
    _params(config, {P.INPUT_SIZE: s.input_size, P.MAX_PIXELS: s.max_pixels})
    if s.preprocess == "gpu":
        _params(config, {P.JPEG_DECODER: s.jpeg_decoder})
    return config


def engine_config(s: RepositorySpec) -> mc.ModelConfig:
    if s.flavour == "trt":
        config = _composing(s, spec.ENGINE_NAME, backend="tensorrt", kind=mc.ModelInstanceGroup.KIND_GPU)
        config.platform = "tensorrt_plan"
        config.default_model_filename = FLAVOUR_FILES["trt"]
    elif s.flavour == "torch":
        gpu = s.engine_device == "cuda"
        kind = mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU
        config = _composing(s, spec.ENGINE_NAME, kind=kind)
        _params(config, {P.ENGINE_FILE: FLAVOUR_FILES["torch"], P.INTRA_OP_THREADS: s.intra_op_threads(),
                         P.PRECISION: s.engine_precision if gpu else "fp32",
                         P.CUDA_GRAPHS: spec.YES if gpu else spec.NO, P.NEEDS_TORCH: spec.YES,
                         FORCE_CPU_ONLY_INPUT_TENSORS: spec.NO})
    else:
        config = _composing(s, spec.ENGINE_NAME)
        _params(config, {P.ENGINE_FILE: FLAVOUR_FILES["onnx"], P.INTRA_OP_THREADS: s.intra_op_threads()})
    config.input.append(_tensor(mc.ModelInput, spec.ENGINE_INPUT, ENGINE_INPUT_TYPE, _input_dims(s)))
    config.output.extend(_tensor(mc.ModelOutput, n, FP32, d) for n, d in s.engine_shapes().items())
    return config


def decode_config(s: RepositorySpec) -> mc.ModelConfig:
    config = _device_resident(s, spec.DECODE_NAME)
    config.input.extend(_tensor(mc.ModelInput, n, FP32, d) for n, d in s.engine_shapes().items())
    config.input.append(_tensor(mc.ModelInput, spec.AFFINE, FP32, [len(spec.AFFINE_FIELDS)]))
    config.output.extend(_ensemble_outputs(s, mc.ModelOutput))
    _params(config, {P.SCORE_THR: s.score_thr, P.NMS_THR: s.nms_thr, P.NUM_KEYPOINTS: s.num_keypoints})
    return config


def ensemble_config(s: RepositorySpec) -> mc.ModelConfig:
    config = mc.ModelConfig(name=spec.ENSEMBLE_NAME, platform="ensemble", max_batch_size=s.max_batch)
    config.input.append(_tensor(mc.ModelInput, spec.ENSEMBLE_INPUT, STRING, [1]))
    config.output.extend(_ensemble_outputs(s, mc.ModelOutput))
    steps = config.ensemble_scheduling.step
    pre = steps.add(model_name=spec.PREPROCESS_NAME, model_version=-1)
    pre.input_map[spec.ENSEMBLE_INPUT] = spec.ENSEMBLE_INPUT
    pre.output_map[spec.ENGINE_INPUT] = spec.ENGINE_INPUT
    pre.output_map[spec.AFFINE] = spec.AFFINE
    eng = steps.add(model_name=spec.ENGINE_NAME, model_version=-1)
    eng.input_map[spec.ENGINE_INPUT] = spec.ENGINE_INPUT
    for name in spec.ENGINE_OUTPUTS:
        eng.output_map[name] = name
    dec = steps.add(model_name=spec.DECODE_NAME, model_version=-1)
    for name in (*spec.ENGINE_OUTPUTS, spec.AFFINE):
        dec.input_map[name] = name
    for name in spec.ENSEMBLE_OUTPUTS:
        dec.output_map[name] = name
    kp = s.keypoints
    _params(config, {
        P.VARIANT: s.variant, P.INPUT_SIZE: s.input_size, P.TOPK: s.topk, P.ENGINE_FLAVOUR: s.flavour,
        P.PREPROCESS: s.preprocess,
        P.SCORE_THR: s.score_thr, P.NMS_THR: s.nms_thr, P.MAX_PIXELS: s.max_pixels, P.MAX_QUEUE: s.max_queue,
        P.KEYPOINT_DATASET: kp.dataset, P.KEYPOINT_NAMES: ",".join(kp.names),
        P.SKELETON: ",".join(f"{a}-{b}" for a, b in kp.skeleton), **s.provenance,
    })
    return config


def render_all(s: RepositorySpec) -> dict[str, str]:
    """Model name → config.pbtxt text."""
    configs = (ensemble_config(s), preprocess_config(s), engine_config(s), decode_config(s))
    return {c.name: text_format.MessageToString(c) for c in configs}


def write_configs(repo: Path, s: RepositorySpec) -> list[Path]:
    """Write every config.pbtxt under ``repo`` (creating model folders)."""
    written = []
    for name, text in render_all(s).items():
        path = repo / name / "config.pbtxt"
        path.parent.mkdir(parents=True, exist_ok=True)
        (repo / name / spec.MODEL_VERSION).mkdir(exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
