"""Parameters of a served model, as Triton hands them to a Python model's ``initialize``.

Kept apart from the config renderer so the Python models import nothing heavy.
"""
from __future__ import annotations

import json


def read_parameters(model_config: str) -> dict[str, str]:
    """``parameters`` of the JSON model config (``args["model_config"]``) as a plain str → str dict."""
    return {k: v["string_value"] for k, v in json.loads(model_config).get("parameters", {}).items()}
