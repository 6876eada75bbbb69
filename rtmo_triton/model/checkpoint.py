"""Load official mmpose RTMO checkpoints (or plain state dicts) into our model.

The variant, keypoint count and whether the file was saved after mmpose's
``switch_to_deploy`` are all read from tensor shapes and names, so users
pass only a path. Loading is strict: every tensor inference needs must be
present with the right shape, and only tensors named in ``IGNORED`` may be
left over.
"""
from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..spec import (
    BENCHMARK_PEOPLE,
    DEFAULT_NMS_THR,
    DEFAULT_SCORE_THR,
    DEFAULT_TOPK,
    KEYPOINT_SETS,
    VARIANTS,
    served_topk,
)
from .rtmo import RTMO, build_rtmo, cell_priors, decode_boxes, flatten_levels

IGNORED: dict[str, str] = {
    "head.head_module.out_kpt_reg.": "training-only proxy keypoint regression",
    "head.dcc.sigma_fc.": "training-only sigma prediction for the MLE loss",
    "head.loss_oks.": "training-only OKS loss constants",
    "neck.pos_enc_0": "position code cached by switch_to_deploy; recomputed here",
}
"""Checkpoint key prefixes that inference does not use, with the reason."""

_STEM = "backbone.stem.conv.conv.weight"
_VIS = "head.head_module.out_kpt_vis.0.weight"
_FUSED_NECK = "neck.fpn_blocks.0.bottlenecks.0.conv_reparam.weight"
_FUSED_DCC = "head.dcc.pose_to_kpts.weight"


class CheckpointError(ValueError):
    """The file cannot be used as an RTMO checkpoint; the message says why."""


@dataclass(frozen=True)
class CheckpointInfo:
    path: str
    variant: str
    num_keypoints: int
    deploy_form: bool
    ignored_keys: tuple[str, ...]


def _read(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint is empty (0 bytes): {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f"checkpoint is truncated or corrupt: {path} ({e})") from e
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path} is not a weights-only PyTorch checkpoint (it may be another format, "
            f"or pickle content that weights_only=True refuses): {e}"
        ) from e
    except Exception as e:  # torch raises many types for foreign or damaged files
        msg = (str(e).splitlines() or [type(e).__name__])[0]
        damaged = any(w in msg.lower() for w in ("zip", "archive", "central directory"))
        hint = "truncated or corrupt" if damaged else "unreadable as a PyTorch checkpoint"
        raise CheckpointError(f"checkpoint is {hint}: {path} ({type(e).__name__}: {msg})") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path} holds neither an mmengine checkpoint {{'meta', 'state_dict'}} nor a state dict"
        )
    return obj


def _detect(state: dict[str, torch.Tensor], path: Path) -> tuple[str, int]:
    if _STEM not in state or _VIS not in state or not any(k.startswith("head.dcc.") for k in state):
        sample = ", ".join(sorted(state)[:5]) or "(no tensors)"
        raise CheckpointError(
            f"{path} is not an RTMO checkpoint: expected a CSPDarknet backbone and an RTMO head "
            f"with a DCC ('{_STEM}', 'head.dcc.*'); first keys are: {sample}"
        )
    stem = state[_STEM].shape[0]
    by_stem = {int(64 * v.widen): name for name, v in VARIANTS.items()}
    if stem not in by_stem:
        raise CheckpointError(
            f"{path}: backbone stem has {stem} channels, which matches no RTMO variant "
            f"({', '.join(f'{n}={c}' for c, n in by_stem.items())})"
        )
    num_keypoints = state[_VIS].shape[0]
    if num_keypoints not in KEYPOINT_SETS:  # the served contract names every keypoint
        raise CheckpointError(
            f"{path}: the head predicts {num_keypoints} keypoints; served keypoint sets: "
            + ", ".join(f"{k} ({s.dataset})" for k, s in KEYPOINT_SETS.items()))
    return by_stem[stem], num_keypoints


def load_state(model: RTMO, state: dict[str, torch.Tensor], source: str = "checkpoint") -> tuple[str, ...]:
    """Strictly load ``state``; returns the keys skipped as ``IGNORED``."""
    ignored = tuple(k for k in state if k.startswith(tuple(IGNORED)))
    wanted = {k: v for k, v in state.items() if k not in ignored}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(wanted))
    unexpected = sorted(set(wanted) - set(expected))
    wrong = sorted(
        f"{k}: checkpoint {tuple(wanted[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(wanted) & set(expected) if wanted[k].shape != expected[k].shape
    )
    problems = [
        f"{title} ({len(keys)}):\n  " + "\n  ".join(keys)
        for title, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("shape mismatches", wrong)) if keys
    ]
    if problems:
        raise CheckpointError(f"{source} does not fit RTMO-{model.variant.name}:\n" + "\n".join(problems))
    model.load_state_dict(wanted, strict=True)
    return ignored


def load_checkpoint(path: str | Path) -> tuple[RTMO, CheckpointInfo]:
    """An official RTMO checkpoint (t/s/m/l; body7, coco or crowdpose) -> eval-mode model."""
    path = Path(path)
    state = _read(path)
    variant, num_kpts = _detect(state, path)
    fused = _FUSED_NECK in state or _FUSED_DCC in state
    if (_FUSED_NECK in state) != (_FUSED_DCC in state):
        raise CheckpointError(f"{path}: half of the model is in deploy form and half is not")
    model = build_rtmo(variant, num_kpts, fused=fused)
    ignored = load_state(model, state, str(path))
    return model.eval(), CheckpointInfo(str(path), variant, num_kpts, fused, ignored)


OUTPUT_GAIN = 0.02


def random_model(variant: str, seed: int = 0, num_keypoints: int | None = None) -> RTMO:
    """Deterministic random weights: for demos, tests and benchmarks, never for accuracy.

    Plain random weights make activations grow layer after layer until boxes
    overflow, so BatchNorm statistics are then measured on a fixed synthetic
    image: every layer sees unit-scale inputs and the outputs look like a
    model's (finite boxes, a spread of scores).
    """
    return _random_model(variant, seed, num_keypoints)[0]


def _random_model(variant: str, seed: int, num_keypoints: int | None) -> tuple[RTMO, torch.Tensor]:
    """``random_model`` and the synthetic image [1, 3, S, S] its BatchNorm statistics were measured on."""
    gen = torch.Generator().manual_seed(seed)
    kwargs = {} if num_keypoints is None else {"num_keypoints": num_keypoints}
    with torch.random.fork_rng(devices=[]):  # biases keep PyTorch's default init: seed it, leave no trace
        torch.manual_seed(seed)
        model = build_rtmo(variant, **kwargs)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point() and t.dim() > 1 and not name.endswith("bins"):
                t.copy_(torch.randn(t.shape, generator=gen) / t[0].numel() ** 0.5)
        size = model.variant.input_size
        smooth = torch.rand(1, 3, size // 16, size // 16, generator=gen) * 255
        image = torch.nn.functional.interpolate(smooth, size=(size, size), mode="bilinear")
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: one batch sets the statistics exactly
        model.train()
        model(image)
        for bn in norms:
            bn.momentum = 0.1
        # the output layers have no norm after them; shrink them so box sizes
        # (an exp of their output) and scores stay in a plausible range
        for name, t in model.head.head_module.named_parameters():
            if name.startswith("out_") and name.endswith("weight"):
                t.mul_(OUTPUT_GAIN)
    return model.eval(), image


_BISECTION_STEPS = 40
"""Halvings of the shift's bracket (the K logits' spread plus 2): far finer than a float32 logit resolves."""


@dataclass(frozen=True)
class BenchmarkCalibration:
    """What ``benchmark_model`` did: the shift added to every ``out_cls`` bias, the people each
    calibration image then gives (threshold and NMS as the decoder applies them), and those settings."""

    shift: float
    people: tuple[int, ...]
    target: int
    topk: int
    score_thr: float
    nms_thr: float

    @property
    def median(self) -> float:
        return float(np.median(self.people))


def benchmark_model(
    variant: str, *, seed: int = 0, people: int = BENCHMARK_PEOPLE,
    images: Sequence[np.ndarray] | None = None, num_keypoints: int | None = None, topk: int = DEFAULT_TOPK,
    score_thr: float = DEFAULT_SCORE_THR, nms_thr: float = DEFAULT_NMS_THR,
) -> tuple[RTMO, BenchmarkCalibration]:
    """``random_model``'s weights with the classification biases shifted so that a median of ``people``
    per image pass ``score_thr`` and NMS: benchmarks then measure the decoder at a realistic load.

    ``images`` are letterboxed model inputs ([3, S, S] BGR, as the preprocess makes them); without them
    the one synthetic image ``random_model`` measured its statistics on is the calibration set. Only the
    ``out_cls`` biases differ from ``random_model``'s. Returns the calibration too, for the build's log
    and its tests.
    """
    if images is not None and variant in VARIANTS:  # checked before the seconds of random_model
        size, shapes = VARIANTS[variant].input_size, sorted({tuple(np.shape(i)) for i in images})
        if shapes != [(3, size, size)]:
            raise ValueError(f"calibration images must be letterboxed [3, {size}, {size}] inputs of "
                             f"RTMO-{variant}, got shapes {shapes or 'none (no images)'}")
    model, synthetic = _random_model(variant, seed, num_keypoints)
    inputs = synthetic if images is None else torch.from_numpy(np.stack(list(images))).float()
    calibration = calibrate_classification(model, inputs, people=people, topk=topk, score_thr=score_thr,
                                           nms_thr=nms_thr)
    with torch.no_grad():
        for conv in model.head.head_module.out_cls:
            conv.bias.add_(calibration.shift)
    return model, calibration


def calibrate_classification(
    model: RTMO, inputs: torch.Tensor, *, people: int, topk: int = DEFAULT_TOPK,
    score_thr: float = DEFAULT_SCORE_THR, nms_thr: float = DEFAULT_NMS_THR, chunk: int = 8,
) -> BenchmarkCalibration:
    """The shift of every classification logit for which the median image gives ``people`` people.

    A served score is the sigmoid of its cell's logit and nothing else, so one shift common to all cells
    leaves the engine's top-K cells and their boxes as they are: the network runs once, and bisection
    then moves only the K logits through the decoder's threshold and NMS. The people count never falls
    as the shift grows (the threshold passes a longer prefix of the same ranking, and greedy NMS decides
    each candidate from better-ranked ones only), so bisection finds its steps; the middle of the median's
    step at ``people`` is taken, so that the few ULPs an FP16 or TensorRT engine changes in a score leave
    the count as it is.
    """
    from ..served.postprocess import survivors

    k = served_topk(topk, model.variant.input_size)
    if not 1 <= people <= k:
        raise ValueError(f"people per image must be in [1, K={k}], got {people}")
    if not 0 < score_thr < 1:  # at 0 every candidate passes whatever the shift
        raise ValueError(f"calibrating needs a score threshold in (0, 1), got {score_thr}")
    logits, boxes = _top_candidates(model.eval(), inputs, k, chunk)

    def counts(shift: float) -> tuple[int, ...]:
        scores = torch.sigmoid(torch.from_numpy(logits) + shift).numpy()
        return tuple(len(survivors(s, b, score_thr, nms_thr)) for s, b in zip(scores, boxes))

    def median(shift: float) -> float:
        return float(np.median(counts(shift)))

    threshold = float(np.log(score_thr / (1 - score_thr)))  # the logit of the score threshold
    low = threshold - float(logits.max()) - 1.0  # every score below the threshold: nobody
    high = threshold - float(logits.min()) + 1.0  # every candidate passes: NMS alone decides
    if median(high) < people:
        raise ValueError(f"NMS leaves a median of {median(high):g} of the K={k} candidates per image, "
                         f"fewer than the {people} people asked for")
    first = _first_reaching(median, people, low, high)
    beyond = _first_reaching(median, people + 0.5, first, high) if median(high) > people else high
    shift = (first + beyond) / 2
    if median(shift) != people:  # the count jumps over ``people``: the nearest count above it
        shift = first
    return BenchmarkCalibration(shift=shift, people=counts(shift), target=people, topk=k,
                                score_thr=score_thr, nms_thr=nms_thr)


def _top_candidates(model: RTMO, inputs: torch.Tensor, k: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Classification logits [N, K] and boxes [N, K, 4] of each image's K best cells, as the deploy
    graph (``model.deploy.DeployRTMO``) selects and decodes them."""
    priors, strides = cell_priors(model.variant.input_size)
    logits, boxes = [], []
    with torch.no_grad():
        for start in range(0, len(inputs), chunk):
            maps = model(inputs[start:start + chunk])
            top, idx = torch.topk(flatten_levels(maps.cls)[..., 0], k, dim=1)
            deltas = torch.gather(flatten_levels(maps.box), 1, idx.unsqueeze(-1).expand(-1, -1, 4))
            logits.append(top.float())
            boxes.append(decode_boxes(deltas.float(), priors[idx], strides[idx]))
    return torch.cat(logits).numpy(), torch.cat(boxes).numpy()


def _first_reaching(f: Callable[[float], float], target: float, low: float, high: float) -> float:
    """Bisection for the least shift where the non-decreasing ``f`` reaches ``target``, given
    ``f(low) < target <= f(high)``; returns a shift where ``f`` has reached it."""
    for _ in range(_BISECTION_STEPS):
        mid = (low + high) / 2
        if f(mid) >= target:
            high = mid
        else:
            low = mid
    return high
