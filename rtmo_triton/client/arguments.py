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
