"""Triton's Prometheus ``/metrics``, read with prometheus_client's parser: per (metric, model) sums."""
from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str, *, timeout_s: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return response.read().decode()


def by_model(text: str, names: Iterable[str], *, model: str = ".*") -> dict[tuple[str, str], float]:
    """(metric, model) → value, summed over the other labels (version, GPU), for the metric families
    in ``names`` and the models whose name matches the regular expression ``model``. Families, not
    sample names, are matched: a counter's samples carry a ``_total`` suffix in some exporters."""
    wanted, values = set(names), {}
    for family in text_string_to_metric_families(text):
        if family.name not in wanted:
            continue
        for sample in family.samples:
            name = sample.labels.get("model", "")
            if re.fullmatch(model, name):
                key = (family.name, name)
                values[key] = values.get(key, 0.0) + sample.value
    return values
