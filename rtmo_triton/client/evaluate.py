"""``rtmo-eval``: keypoint AP of the served `rtmo` ensemble on a COCO-format annotation file.

Scored the way mmpose 1.3.2 scores RTMO: every RTMO config evaluates with
``CocoMetric(score_mode='bbox', nms_mode='none')``, so a person's score is the
box score the model gave it and no OKS re-NMS runs; every image of the
annotation file is inferred in test mode, those without people included (what
the model finds there counts against it); each result keeps the predicted box
as xywh, so xtcocotools' ``loadRes`` takes a detection's area from its box.
COCO uses iou_type ``keypoints`` with the annotated areas; CrowdPose
``keypoints_crowd`` with ``use_area=False`` and AP easy/medium/hard by each
image's ``crowdIndex``. The OKS, matching and AP are xtcocotools' own.

A run appends each finished image to ``<out>.progress`` (JSON lines); the same
command run again continues from it, and failed images are retried. Exit
status: 0 scored, 1 images failed (rerun to retry them), 2 bad input,
3 server unreachable or model not ready.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .. import spec
from ..whole_files import write_whole
from . import exit_codes
from .arguments import add_server_options
from .infer import infer_images
from .people import People
from .records import COORD_DECIMALS
from .transport import (
    Client,
    ModelNotReady,
    ServerUnavailable,
    connect,
    normalize_url,
    served_parameters,
)

SCORE_DECIMALS = 6
"""Result scores rank detections; fewer decimals would create ties the model did not make."""
CHUNK_REQUESTS = 4
"""Requests per concurrent slot per round: bounds memory, and progress is saved after each round."""


@dataclass(frozen=True)
class Benchmark:
    """How mmpose's CocoMetric evaluates one keypoint set (its dataset metainfo and RTMO configs)."""

    keypoints: spec.KeypointSet
    sigmas: tuple[float, ...]
    iou_type: str
    use_area: bool
    stat_names: tuple[str, ...]


BENCHMARKS: dict[str, Benchmark] = {b.keypoints.dataset: b for b in (
    Benchmark(spec.COCO,
              (0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
               0.107, 0.107, 0.087, 0.087, 0.089, 0.089),
              "keypoints", True,
              ("AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)")),
    Benchmark(spec.CROWDPOSE,
              (0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
               0.079, 0.079),
              "keypoints_crowd", False,
              ("AP", "AP .5", "AP .75", "AR", "AR .5", "AR .75", "AP(E)", "AP(M)", "AP(H)")),
)}


class EvalError(RuntimeError):
    """Bad input, said in one line."""


@dataclass(frozen=True)
class Annotation:
    path: Path
    benchmark: Benchmark
    category_id: int
    images: list[dict]
    """The annotation file's image entries (``id``, ``file_name``), in file order."""


def load_annotation(path: Path) -> Annotation:
    """The annotation file, its keypoint set told by the person category's keypoint count."""
    if not path.is_file():
        raise EvalError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvalError(f"{path}: not JSON ({exc})") from None
    categories = [c for c in data.get("categories", []) if c.get("keypoints")]
    if len(categories) != 1 or "images" not in data or "annotations" not in data:
        raise EvalError(f"{path}: not a COCO keypoint annotation file (need images, annotations and "
                        f"one category with keypoints; found {len(categories)} such categories)")
    count = len(categories[0]["keypoints"])
    known = spec.KEYPOINT_SETS.get(count)
    if known is None:
        sets = ", ".join(f"{k} ({s.dataset})" for k, s in spec.KEYPOINT_SETS.items())
        raise EvalError(f"{path}: {count} keypoints per person; rtmo-eval knows {sets}")
    benchmark = BENCHMARKS[known.dataset]
    if benchmark.iou_type == "keypoints_crowd" and any("crowdIndex" not in i for i in data["images"]):
        raise EvalError(f"{path}: a CrowdPose annotation needs every image's crowdIndex")
    return Annotation(path, benchmark, int(categories[0]["id"]), data["images"])


def check_served_keypoints(parameters: dict[str, str], benchmark: Benchmark) -> None:
    """The served model must predict the annotation's keypoint set (its config says which)."""
    dataset, names = parameters.get(spec.Param.KEYPOINT_DATASET), parameters.get(spec.Param.KEYPOINT_NAMES)
    if dataset is None or names is None:
        raise EvalError("the served model's config has no keypoint_dataset/keypoint_names parameters: "
                        "rebuild the repository with `make build-engines`")
    wanted = benchmark.keypoints
    if dataset != wanted.dataset or len(names.split(",")) != wanted.num_keypoints:
        raise EvalError(f"the served model predicts {len(names.split(','))} {dataset} keypoints, the "
                        f"annotation file has {wanted.num_keypoints} ({wanted.dataset}): serve a "
                        f"{wanted.dataset} checkpoint")


def coco_results(people: People, image_id: int, category_id: int = 1) -> list[dict[str, Any]]:
    """One COCO keypoint result per person, as mmpose writes them for RTMO (score = box score)."""
    xywh = np.concatenate([people.boxes[:, :2], people.boxes[:, 2:] - people.boxes[:, :2]], 1)
    kpts = np.concatenate([people.keypoints, people.keypoint_scores[..., None]], -1).reshape(len(xywh), -1)
    return [
        {"image_id": image_id, "category_id": category_id,
         "keypoints": np.round(k.astype(np.float64), COORD_DECIMALS).tolist(),
         "score": round(float(s), SCORE_DECIMALS),
         "bbox": np.round(b.astype(np.float64), COORD_DECIMALS).tolist()}
        for k, s, b in zip(kpts, people.scores, xywh)
    ]


def score(annotation: Annotation, results_file: Path) -> dict[str, float]:
    """xtcocotools' COCOeval on a results file; prints its standard table, returns mmpose's stat names."""
    try:
        from xtcocotools.coco import COCO
        from xtcocotools.cocoeval import COCOeval
    except (ImportError, ValueError) as exc:  # ValueError: a wheel built for another numpy
        raise EvalError(f"xtcocotools cannot be used ({exc}): "
                        "pip install 'rtmo-triton[eval]' (xtcocotools, numpy<2)") from None

    b = annotation.benchmark
    gt = COCO(str(annotation.path))
    try:
        dt = gt.loadRes(str(results_file))
    except AssertionError:
        raise EvalError(f"{results_file} names images that are not in {annotation.path}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EvalError(f"{results_file}: not a COCO keypoint results file ({exc})") from None
    evaluation = COCOeval(gt, dt, b.iou_type, np.array(b.sigmas), b.use_area)
    evaluation.params.useSegm = None
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return dict(zip(b.stat_names, (float(v) for v in evaluation.stats), strict=True))


def missing_images(annotation: Annotation, images_dir: Path) -> list[str]:
    return [i["file_name"] for i in annotation.images if not (images_dir / i["file_name"]).is_file()]


def progress_path(out: Path) -> Path:
    """The resume file of a run writing ``out``: not ``whole_files``' ``<out>.partial``, which the final
    write uses and renames away."""
    return out.with_name(out.name + ".progress")


class Progress:
    """``<out>.progress``: a header line (what made it), then one line per finished image."""

    def __init__(self, path: Path, header: dict[str, Any]):
        self.path, self.done = path, {}
        lines = path.read_text().splitlines() if path.is_file() else []
        try:
            made_for = json.loads(lines[0]) if lines else header
        except json.JSONDecodeError:
            made_for = None
        if made_for != header:
            raise EvalError(f"{path} was made with another annotation file or served model, or is not "
                            "ours; delete it to start over")
        for line in lines[1:]:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # the torn last line of a killed run
                break
            self.done[record["image_id"]] = record["results"]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_whole(path, "".join(json.dumps(r) + "\n" for r in (header, *(
            {"image_id": k, "results": v} for k, v in self.done.items()))))

    def add(self, image_id: int, results: list[dict]) -> None:
        self.done[image_id] = results
        with self.path.open("a") as f:
            f.write(json.dumps({"image_id": image_id, "results": results}) + "\n")


def run(annotation: Annotation, images_dir: Path, out: Path, *, client: Client,
        model: str = spec.ENSEMBLE_NAME, concurrency: int = 1, wait_s: float = 0.0,
        log: TextIO | None = None) -> list[str]:
    """Infer every image not yet in ``<out>.progress``; write ``out`` once all are done.

    Returns the errors of the images that failed (empty when ``out`` was written).
    """
    log = log or sys.stderr
    info = client.ready(model, wait_s=wait_s)
    parameters = served_parameters(client.config(model))
    check_served_keypoints(parameters, annotation.benchmark)
    header = {"annotation": str(annotation.path.resolve()), "model": model, "parameters": parameters}
    progress = Progress(progress_path(out), header)
    todo = [i for i in annotation.images if i["id"] not in progress.done]
    batch = max(info.max_batch_size, 1)
    chunk = batch * concurrency * CHUNK_REQUESTS
    print(f"{len(annotation.images)} images, {len(annotation.images) - len(todo)} already done "
          f"({progress.path}); sending {len(todo)}", file=log)
    errors: list[str] = []
    start, people_total, tty = time.perf_counter(), 0, log.isatty()
    for k in range(0, len(todo), chunk):
        group, data = [], []
        for image in todo[k:k + chunk]:
            try:
                data.append((images_dir / image["file_name"]).read_bytes())
                group.append(image)
            except OSError as exc:  # unreadable (permissions): this image fails, the others go on
                errors.append(f"{image['file_name']}: cannot read: {exc.strerror or exc}")
        people = infer_images(client, data, model_name=model, batch_size=batch, concurrency=concurrency)
        for image, p in zip(group, people, strict=True):
            if p.ok:
                progress.add(image["id"], coco_results(p, image["id"], annotation.category_id))
                people_total += p.num_people
            else:
                errors.append(f"{image['file_name']}: {p.error}")
        sent = min(k + chunk, len(todo))
        rate = sent / (time.perf_counter() - start)
        print(f"[{sent}/{len(todo)}] {people_total} people, {len(errors)} failed, {rate:.1f} img/s, "
              f"ETA {(len(todo) - sent) / rate:.0f} s  ", file=log, flush=True, end="\r" if tty else "\n")
        if people and not any(p.ok for p in people):
            errors.append(f"stopped: every image of the last {len(group)} failed")
            break
    if tty and todo:
        print(file=log)
    if errors:
        return errors
    results = [r for i in annotation.images for r in progress.done[i["id"]]]
    write_whole(out, "[\n" + ",\n".join(json.dumps(r) for r in results) + "\n]\n")
    progress.path.unlink()
    print(f"{len(results)} people in {len(annotation.images)} images written to {out}", file=log)
    return []


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rtmo-eval", description="COCO/CrowdPose keypoint AP of the RTMO ensemble served by Triton, "
        "scored as mmpose scores RTMO (xtcocotools).", epilog=exit_codes.EPILOG)
    p.add_argument("--ann", type=Path, required=True, help="COCO-format keypoint annotation file")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="folder holding the annotation's file_name entries")
    source.add_argument("--score", type=Path, metavar="RESULTS", help="only score this COCO results file")
    p.add_argument("--out", type=Path, help="results file (default <ann stem>.rtmo-results.json)")
    add_server_options(p, concurrency=4)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        annotation = load_annotation(args.ann)
        results = args.score
        if results is None:
            results = args.out or Path(f"{args.ann.stem}.rtmo-results.json")
            if not args.images.is_dir():
                raise EvalError(f"image folder not found: {args.images}")
            if missing := missing_images(annotation, args.images):
                raise EvalError(f"{len(missing)} of {len(annotation.images)} images are not in "
                                f"{args.images}, e.g. {', '.join(missing[:3])}")
            code = _infer(args, annotation, results)
            if code != exit_codes.OK:
                return code
        elif not results.is_file():
            raise EvalError(f"results file not found: {results}")
        stats = score(annotation, results)
    except EvalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    print(f"{annotation.benchmark.keypoints.dataset} AP {stats['AP']:.3f} ({results}, {args.ann})")
    return exit_codes.OK


def _infer(args: argparse.Namespace, annotation: Annotation, results: Path) -> int:
    url = normalize_url(args.url, args.protocol)
    client = connect(url, args.protocol, concurrency=args.concurrency, timeout_s=args.timeout)
    try:
        errors = run(annotation, args.images, results, client=client, model=args.model,
                     concurrency=args.concurrency, wait_s=args.wait)
    except (ServerUnavailable, ModelNotReady) as exc:
        print(f"error: {url}: {exc}", file=sys.stderr)
        return exit_codes.SERVER
    finally:
        client.close()
    for line in errors[:10]:
        print(f"error: {line}", file=sys.stderr)
    if errors:
        print(f"{len(errors)} error(s); finished images are kept: run the same command again to retry "
              "the rest", file=sys.stderr)
        return exit_codes.SOME_FAILED
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
