"""Argument checks shared by the command-line tools (rtmo-client, rtmo-eval, rtmo-video):
argparse turns their ``ArgumentTypeError`` into a usage error that names the flag."""
from __future__ import annotations

import argparse


def _within(value: float, low: float, high: float, text: str) -> float:
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be {text}, got {value}")
    return value


def positive_int(text: str) -> int:
    return int(_within(int(text), 1, float("inf"), ">= 1"))


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def unit_float(text: str) -> float:
    return _within(float(text), 0.0, 1.0, "within [0, 1]")


def percent(text: str) -> int:
    return int(_within(int(text), 1, 100, "within [1, 100]"))


def server_url(text: str) -> str:
    """``--url``: checked here so a malformed address is a usage error, not a failed connection."""
    from .transport import normalize_url

    try:
        normalize_url(text, "http")  # the protocol only picks a default port: either checks the form
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_server_options(parser: argparse.ArgumentParser, *, concurrency: int) -> None:
    """The options every tool shares, with one name, one meaning and one default each: where the
    server is, how to talk to it, how long one request may take and how many are in flight."""
    from .. import spec
    from .transport import DEFAULT_PORTS, DEFAULT_TIMEOUT_S, PROTOCOLS

    group = parser.add_argument_group("server")
    group.add_argument("--url", type=server_url, help="host[:port]; default 127.0.0.1 on port "
                       + " / ".join(f"{p} ({n})" for n, p in DEFAULT_PORTS.items()))
    group.add_argument("--protocol", choices=PROTOCOLS, default=DEFAULT_PROTOCOL,
                       help="default %(default)s")
    group.add_argument("--model", default=spec.ENSEMBLE_NAME, help="ensemble name (default %(default)s)")
    group.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT_S,
                       help="seconds one request may take (default %(default)s)")
    group.add_argument("--concurrency", type=positive_int, default=concurrency,
                       help="requests in flight (default %(default)s)")
    group.add_argument("--wait", type=float, default=0.0,
                       help="seconds to wait for the server and model to become ready (default 0)")


DEFAULT_PROTOCOL = "http"
"""Every tool's default: HTTP reaches a server through any proxy; gRPC is one flag away."""
