"""``rtmo_client``: send images or folders to the `rtmo` ensemble, print and save people.

Exit status: ``exit_codes``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import cv2

from .. import spec
from ..served.image_io import ImageError, decode_bgr
from ..whole_files import write_whole
from . import exit_codes
from .arguments import add_server_options, positive_int, unit_float
from .files import IMAGE_EXTENSIONS, ImageFile, find_images
from .infer import infer_images
from .overlay import DEFAULT_KPT_THR, draw_overlay
from .people import People
from .records import people_record
from .transport import (
    ModelNotReady,
    ServerUnavailable,
    connect,
    normalize_url,
)

CHUNK_REQUESTS = 4
"""Requests' worth of images read per round per concurrent slot: bounds memory on big folders."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtmo-client",
        description="Multi-person pose estimation with the RTMO ensemble on a Triton server.",
        epilog=f"Folders are searched recursively for {', '.join(sorted(IMAGE_EXTENSIONS))}. "
               + exit_codes.EPILOG,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    add_server_options(parser, concurrency=1)
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--out-dir", type=Path, help="write <stem>.json (and overlays) per image here")
    out.add_argument("--json", metavar="FILE", help="write all results to one JSON file ('-' = stdout)")
    parser.add_argument("--overlay", action="store_true",
                        help="also write <stem>_overlay.png (needs --out-dir)")
    parser.add_argument("--kpt-thr", type=unit_float, default=DEFAULT_KPT_THR,
                        help="keypoints scoring below this are not drawn (default %(default)s)")
    parser.add_argument("--batch-size", type=positive_int,
                        help="images per request (default and cap: the model's max_batch_size)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[ImageFile]]:
    """Arguments plus the images they name; argparse exits with status 2 on any misuse."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.overlay and args.out_dir is None:
        parser.error("--overlay needs --out-dir")
    if args.json not in (None, "-") and not Path(args.json).resolve().parent.is_dir():
        parser.error(f"--json {args.json}: its folder does not exist")  # found now, not after the work
    try:
        files = find_images(args.paths)
    except FileNotFoundError as exc:
        parser.error(str(exc))
    if not files:
        parser.error(f"no images found in {' '.join(args.paths)}")
    return args, files


def main(argv: Sequence[str] | None = None) -> int:
    args, files = parse_args(argv)
    log = sys.stderr if args.json == "-" else sys.stdout  # keep stdout pure JSON when it carries results
    url = normalize_url(args.url, args.protocol)
    client = connect(url, args.protocol, concurrency=args.concurrency, timeout_s=args.timeout)
    try:
        return _run(args, files, client, url, log)
    finally:
        client.close()


def _run(args: argparse.Namespace, files: list[ImageFile], client: Any, url: str, log: TextIO) -> int:
    try:
        info = client.ready(args.model, wait_s=args.wait)
    except (ServerUnavailable, ModelNotReady) as exc:
        print(f"error: {url}: {exc}", file=sys.stderr)
        return exit_codes.SERVER
    max_batch = info.max_batch_size
    batch = min(args.batch_size or max_batch, max_batch)
    if args.batch_size and args.batch_size > max_batch:
        print(f"note: --batch-size {args.batch_size} capped at the model's max_batch_size {max_batch}",
              file=log)
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)

    records: list[dict[str, Any]] = []
    failed = people_total = 0
    start = time.perf_counter()
    chunk = batch * args.concurrency * CHUNK_REQUESTS
    for k in range(0, len(files), chunk):
        group = files[k:k + chunk]
        data, read_errors = _read_all(group)
        results = infer_images(client, data, model_name=args.model, batch_size=batch,
                               concurrency=args.concurrency)
        for file, image_bytes, read_error, people in zip(group, data, read_errors, results, strict=True):
            if read_error:
                people = People.failure(read_error)
            failed += not people.ok
            people_total += people.num_people
            print(_summary(file, people), file=log)
            image = _decoded(image_bytes) if args.out_dir or args.json else None
            size = (image.shape[1], image.shape[0]) if image is not None else None
            record = people_record(people, str(file.path), size)
            if args.out_dir:
                _write_outputs(args.out_dir, file, record, image, people, args.overlay, args.kpt_thr)
            elif args.json:
                records.append(record)
    if args.json:
        _write_json(args.json, records)
    wall = time.perf_counter() - start
    print(f"{len(files)} image(s), {people_total} people, {failed} failed, {wall:.2f} s "
          f"({args.protocol} {url}, batch {batch}, concurrency {args.concurrency})", file=log)
    return exit_codes.SOME_FAILED if failed else exit_codes.OK


def _read_all(files: list[ImageFile]) -> tuple[list[bytes], list[str | None]]:
    data, errors = [], []
    for file in files:
        try:
            data.append(file.path.read_bytes())
            errors.append(None)
        except OSError as exc:
            data.append(b"")
            errors.append(f"cannot read file: {exc.strerror or exc}")
    return data, errors


def _decoded(data: bytes) -> Any:
    """The picture the server saw, for sizes and overlays; None where the server could not see one."""
    try:
        return decode_bgr(data, spec.DEFAULT_MAX_PIXELS)
    except ImageError:
        return None


def _summary(file: ImageFile, people: People) -> str:
    if not people.ok:
        return f"{file.path}: FAILED: {people.error}"
    batch = f", batch of {people.batch}" if people.batch > 1 else ""
    return f"{file.path}: {people.num_people} people, {people.latency_ms:.1f} ms{batch}"


def _write_outputs(out_dir: Path, file: ImageFile, record: dict, image: Any, people: People,
                   overlay: bool, kpt_thr: float) -> None:
    target = out_dir / file.key
    target.parent.mkdir(parents=True, exist_ok=True)
    target.with_name(target.name + ".json").write_text(json.dumps(record) + "\n")
    if overlay and image is not None:
        cv2.imwrite(str(target.with_name(target.name + "_overlay.png")), draw_overlay(image, people, kpt_thr))


def _write_json(destination: str, records: list[dict]) -> None:
    text = "[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n"  # one image per line
    if destination == "-":
        sys.stdout.write(text)
        return
    write_whole(destination, text)
