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
