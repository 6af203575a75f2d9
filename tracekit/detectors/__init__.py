"""Rule-based detectors and their registry.

A detector is a small module holding one class with ``name``, ``description``, ``requires`` (events that must all
be present), ``requires_any`` (groups of which at least one event must be present), ``record_hint`` (the exact
command line that records what it needs) and ``run(inputs, config) -> RuleResult``. Detectors never print or draw:
they return frames and :class:`Finding` s. Register one with :func:`register`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import polars as pl

from ..model import Trace

__all__ = ["Finding", "RuleResult", "Inputs", "Detector", "register", "registry", "SEVERITIES", "missing_events",
           "describe"]

SEVERITIES = ("info", "warning", "error")


@dataclass(frozen=True)
class Finding:
    """One thing a rule found.

    Attributes:
        rule: the detector's name. severity: ``info``, ``warning`` or ``error``.
        title: one line. summary: a few sentences in words an engineer reads in a bug.
        count: how many instances (flagged exits, bursts …).
        evidence: rows that back it (a frame, JSON-able after ``.to_dicts()``).
    """

    rule: str
    severity: str
    title: str
    summary: str
    count: int = 0
    evidence: pl.DataFrame | None = None


@dataclass
class RuleResult:
    """What one detector returned: whether it ran, its findings, its frames (by name), and when it could not run,
    the events it missed and how to record them."""

    rule: str
    ran: bool
    findings: list[Finding] = field(default_factory=list)
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    record_hint: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Inputs:
    """The traces one analysis looks at: host side (trace.dat, host perf) and guest side (guest perf)."""

    host: tuple[Trace, ...] = ()
    guest: tuple[Trace, ...] = ()

    @property
    def all(self) -> tuple[Trace, ...]:
        return self.host + self.guest

    def with_event(self, name: str, side: str = "host") -> list[Trace]:
        pool = self.host if side == "host" else self.guest if side == "guest" else self.all
        return [t for t in pool if t.has(name)]


class Detector(Protocol):
    name: ClassVar[str]
    description: ClassVar[str]
    requires: ClassVar[tuple[str, ...]]
    requires_any: ClassVar[tuple[tuple[str, ...], ...]]
    record_hint: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]

    def run(self, inputs: Inputs, config: dict[str, Any]) -> RuleResult: ...


_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator adding a detector to the registry under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def registry() -> dict[str, type]:
    """All detectors, by name (importing the built-in rule modules on first use)."""
    from . import _builtin  # noqa: F401  (imports every rule module, which registers itself)

    return dict(_REGISTRY)


def missing_events(inputs: Inputs, requires: tuple[str, ...], requires_any: tuple[tuple[str, ...], ...] = (),
                   side: str = "any") -> list[str]:
    """Events a rule needs that no input holds (for ``requires_any`` groups, the whole group when none is there)."""
    out = [e for e in requires if not inputs.with_event(e, side)]
    for group in requires_any:
        if not any(inputs.with_event(e, side) for e in group):
            out.append(" | ".join(group))
    return out


def describe() -> pl.DataFrame:
    """One row per registered rule: name, description, requires, record_hint, defaults (see
    :data:`tracekit.detectors.catalog.DESCRIBE_SCHEMA`)."""
    from .catalog import describe as _describe

    return _describe()
