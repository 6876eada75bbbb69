"""Parameters of a served model, as Triton hands them to a Python model's ``initialize``.

Kept apart from the config renderer so the Python models import nothing heavy.
"""
from __future__ import annotations

import json


def read_parameters(model_config: str) -> dict[str, str]:
    """``parameters`` of the JSON model config (``args["model_config"]``) as a plain str → str dict."""
    return {k: v["string_value"] for k, v in json.loads(model_config).get("parameters", {}).items()}


def instance_device(args: dict[str, str]) -> str:
    """The torch device of this model instance: the GPU Triton gave a ``KIND_GPU`` instance, else the CPU."""
    if args["model_instance_kind"] == "GPU":
        return f"cuda:{args['model_instance_device_id']}"
    return "cpu"
