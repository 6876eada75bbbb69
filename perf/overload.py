"""``make overload``: the served ``rtmo`` at 1x, 2x and 4x its sustainable concurrency, no client
retries: throughput, p50/p99 of the accepted requests and the share refused as busy.

Closed loop: each client sends its next request when the last one answers, after our client's
backoff when it was refused (each refusal is counted; the client library would retry it). The
sustainable concurrency is measured first: the smallest at which throughput reaches 95 % of the
best seen.
``python -m perf.overload --model-repository R [--seconds S] [--out reports/overload]``
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

from perf.closed_loop import closed_loop
from perf.inputs import SAMPLE_IMAGE
from rtmo_triton import spec
from rtmo_triton.client.transport import is_busy
from rtmo_triton.serve.local import TritonServer, exit_on_sigterm

FIELDS = ("clients", "multiple", "throughput_per_s", "accepted", "refused", "refused_pct", "p50_ms", "p99_ms")


def load(url: str, image: bytes, clients: int, seconds: float) -> list:
    """Every outcome of ``clients`` closed-loop clients over ``seconds``; refused clients back off."""
    outcomes: list = []
    with closed_loop(url, [image], clients=clients, record=outcomes.append, back_off_refused=True):
        time.sleep(seconds)
    return outcomes


def summarise(outcomes: list, clients: int, multiple: float, seconds: float) -> dict:
    ok = [o.latency_ms for o in outcomes if o.error is None]
    busy = [o for o in outcomes if o.error is not None and is_busy(o.error)]
    other = [o for o in outcomes if o.error is not None and o not in busy]
    if other:
        raise RuntimeError(f"{len(other)} requests failed for another reason than busy: {other[0].error}")
    pct = lambda q: round(float(np.percentile(ok, q)), 1) if ok else float("nan")  # noqa: E731
    return {"clients": clients, "multiple": multiple, "throughput_per_s": round(len(ok) / seconds, 2),
            "accepted": len(ok), "refused": len(busy),
            "refused_pct": round(100 * len(busy) / len(outcomes), 1), "p50_ms": pct(50), "p99_ms": pct(99)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m perf.overload",
                                description=__doc__.split("\n")[0])
    p.add_argument("--model-repository", type=Path, default=Path(spec.DEFAULT_REPOSITORY))
    p.add_argument("--image", type=Path, default=SAMPLE_IMAGE)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--out", type=Path, default=Path("reports/overload"))
    args = p.parse_args(argv)
    exit_on_sigterm()
    image = args.image.read_bytes()
    args.out.mkdir(parents=True, exist_ok=True)
    with TritonServer(args.model_repository, log_path=args.out / "tritonserver.log") as server:
        load(server.grpc_url, image, 2, 3.0)  # warm-up
        rates = {c: summarise(load(server.grpc_url, image, c, args.seconds), c, 0, args.seconds)
                 ["throughput_per_s"] for c in (1, 2, 4)}
        sustainable = min(c for c, r in rates.items() if r >= 0.95 * max(rates.values()))
        print(f"throughput by concurrency {rates}: sustainable concurrency {sustainable}", flush=True)
        rows = []
        for multiple in (1, 2, 4):
            clients = sustainable * multiple
            outcomes = load(server.grpc_url, image, clients, args.seconds)
            rows.append(summarise(outcomes, clients, multiple, args.seconds))
            print("  ".join(f"{k} {v}" for k, v in rows[-1].items()), flush=True)
    with open(args.out / "overload.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out / 'overload.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
