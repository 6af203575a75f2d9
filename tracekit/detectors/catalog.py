"""A table of the registered detectors and what each needs (what ``tracekit detectors`` prints); also
:func:`tracekit.detectors.describe`."""

from __future__ import annotations

import json

import polars as pl

from . import registry

__all__ = ["describe", "DESCRIBE_SCHEMA"]

DESCRIBE_SCHEMA = {"name": pl.String, "description": pl.String, "requires": pl.List(pl.String),
                   "record_hint": pl.String, "defaults": pl.String}
"""``requires``: every event the rule needs, a ``requires_any`` group as ``a | b | c`` (one of them);
``defaults``: the rule's thresholds and options as JSON (what a rules file may override)."""


def describe() -> pl.DataFrame:
    """One row per registered detector, sorted by name: name, description, requires, record_hint, defaults.

    Returns:
        a frame with :data:`DESCRIBE_SCHEMA`.
    """
    rows = []
    for name, cls in sorted(registry().items()):
        req = list(getattr(cls, "requires", ()) or ())
        req += [" | ".join(g) for g in (getattr(cls, "requires_any", ()) or ())]
        rows.append({"name": name, "description": getattr(cls, "description", "") or "",
                     "requires": req, "record_hint": getattr(cls, "record_hint", "") or "",
                     "defaults": json.dumps(dict(getattr(cls, "defaults", {}) or {}), sort_keys=True, default=str)})
    return pl.DataFrame(rows, schema=DESCRIBE_SCHEMA)
