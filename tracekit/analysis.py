"""``tracekit.analyze``: read inputs, run the rules, and hold what they found for notebooks, JSON and reports.

::

    a = tracekit.analyze("trace.dat", guest=["guest-perf.data"])
    a.findings            # Polars: rule, severity, title, summary, count (most severe first)
    a.multi_pmi_exits     # VM-exits with more than one synthesized PMI (see the KVM contract schema)
    a.exit_stats, a.hotspots, a.figures
    a.save("out")         # out/report.html, out/*.png, out/findings.json

The JSON written by :meth:`Analysis.save` / :meth:`Analysis.to_json` follows ``tracekit/findings_schema.json``
(:data:`SCHEMA_VERSION`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import polars as pl

from .config import Config, config_from_dict, load_config
from .detectors import SEVERITIES, Inputs, RuleResult
from .detectors.exit_stats import EXIT_STATS_SCHEMA
from .detectors.mutex_hotspots import HOTSPOTS_SCHEMA
from .detectors.pmi import WINDOW_SCHEMA
from .errors import ConfigError, TracekitError
from .model import Trace

__all__ = ["analyze", "Analysis", "SCHEMA_VERSION", "MULTI_PMI_SCHEMA", "EXIT_STATS_SCHEMA", "HOTSPOTS_SCHEMA",
           "FINDINGS_SCHEMA", "WINDOW_EVENTS_SCHEMA", "schema"]

SCHEMA_VERSION = "1.0"

MULTI_PMI_RULE = "multi-pmi-per-exit"
EXIT_STATS_RULE = "exit-stats"
HOTSPOTS_RULE = "mutex-hotspots"

#: the flagged-exit rows (how windows and PMIs are counted: tracekit.detectors.pmi), also used when the rule could
#: not run; each schema is declared once,
#: by the rule that produces the frame
MULTI_PMI_SCHEMA = WINDOW_SCHEMA
FINDINGS_SCHEMA = {"rule": pl.String, "severity": pl.String, "title": pl.String, "summary": pl.String,
                   "count": pl.Int64}
#: events of one thread during a flagged window (evidence shown in the report)
WINDOW_EVENTS_SCHEMA = {"window": pl.Int32, "ts": pl.Int64, "rel_us": pl.Float64, "cpu": pl.Int32,
                        "pid": pl.Int32, "comm": pl.String, "event": pl.String, "info": pl.String}

_RANK = {s: i for i, s in enumerate(SEVERITIES)}
# within a severity, the rules that answer the bug report's two questions come first
_RULE_ORDER = {r: i for i, r in enumerate((MULTI_PMI_RULE, HOTSPOTS_RULE, "lvtpc-unmasked-after-pmi",
                                           "pmu-msr-activity", EXIT_STATS_RULE))}
_EVIDENCE_ROWS = 200
_WORST_WINDOWS = 5

ProgressFn = Callable[[str, int, int], None]


def schema() -> dict[str, Any]:
    """The JSON Schema of ``findings.json`` (``tracekit/findings_schema.json``)."""
    return json.loads((Path(__file__).parent / "findings_schema.json").read_text())


def _empty(schema_: Mapping[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=dict(schema_))


def _jsonable(value: Any) -> Any:
    """Polars ``to_dicts`` values made valid JSON (NaN/inf → null, tuples → lists)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def _rows(df: pl.DataFrame | None, limit: int | None = None) -> list[dict[str, Any]]:
    if df is None or df.is_empty():
        return []
    if limit is not None:
        df = df.head(limit)
    simple = df.with_columns([pl.col(c).cast(pl.String) for c, t in df.schema.items()
                              if t.is_temporal() or isinstance(t, (pl.Categorical, pl.Enum, pl.Object))])
    return [_jsonable(r) for r in simple.to_dicts()]


def _as_traces(items: Any, progress: ProgressFn | None, side: str) -> tuple[Trace, ...]:
    from .api import load

    if items is None:
        return ()
    if isinstance(items, (str, os.PathLike, Trace)):
        items = [items]
    out = []
    try:
        items = list(items)
    except TypeError as exc:
        raise ConfigError(f"analyze: expected a path, a Trace or a list of them as {side} input, "
                          f"found {type(items).__name__}") from exc
    for i, item in enumerate(items):
        if isinstance(item, Trace):
            out.append(item)
            continue
        if not isinstance(item, (str, os.PathLike)):
            raise ConfigError(f"analyze: expected a path or a Trace as {side} input, found {type(item).__name__}")
        name = Path(item).name
        cb = (lambda done, total, _n=name: progress(f"reading {_n}", done, total)) if progress else None
        out.append(load(item, progress=cb))
        if progress:
            progress(f"read {name}", i + 1, len(items))
    return tuple(out)


def _resolve_config(config: Config | Mapping | str | os.PathLike | None, detectors: Mapping[str, type]) -> Config:
    if config is None:
        return Config()
    if isinstance(config, Config):
        return config
    if isinstance(config, (str, os.PathLike)):
        return load_config(config, detectors=detectors)
    if isinstance(config, Mapping):
        return config_from_dict(config, detectors=detectors)
    raise ConfigError(f"analyze: config must be a Config, a rules file path or a dict, not {type(config).__name__}")


def _run_rule(det: Any, inputs: Inputs, options: dict[str, Any]) -> RuleResult:
    name = det.name
    try:
        res = det.run(inputs, options)
    except TracekitError as exc:
        return RuleResult(rule=name, ran=False, missing=list(getattr(exc, "missing", []) or []),
                          record_hint=getattr(det, "record_hint", ""), notes=[f"could not run: {exc}"])
    if not isinstance(res, RuleResult):
        raise TypeError(f"rule {name} returned {type(res).__name__}, expected RuleResult")
    if not res.ran and not res.record_hint:
        res.record_hint = getattr(det, "record_hint", "")
    return res


def analyze(paths_or_traces: Any, *, guest: Any = (), only: str | Iterable[str] | None = None,
            rules: Iterable[Any] | None = None, config: Config | Mapping | str | os.PathLike | None = None,
            progress: ProgressFn | None = None) -> Analysis:
    """Read the inputs and run the rules on them.

    Args:
        paths_or_traces: host-side input(s): a path, a :class:`~tracekit.Trace`, or a list of them (trace.dat,
            ftrace text, host perf.data / perf script).
        guest: guest-side input(s), the same way (e.g. the guest's ``perf record`` data).
        only: run only this rule name (or these names).
        rules: the detectors to consider (classes or instances with ``name``, ``defaults``, ``run``); default every
            registered rule (``tracekit.detectors.registry()``).
        config: rule settings: a :class:`~tracekit.config.Config`, a TOML rules file path, or a dict
            ``{rule: {key: value}}``; merged over each rule's ``defaults``.
        progress: called as ``progress(step, done, total)`` while reading inputs and running rules.

    Returns:
        An :class:`Analysis`.

    Raises:
        TracekitError: an input cannot be read (``ParseError`` …) or the configuration is bad (``ConfigError``).
    """
    if rules is None:
        from .detectors import registry

        detectors = registry()
    else:
        detectors = {r.name: r for r in rules}
    cfg = _resolve_config(config, detectors)
    if only is not None:
        wanted = [only] if isinstance(only, str) else list(only)
        unknown = [w for w in wanted if w not in detectors]
        if unknown:
            raise ConfigError(f"unknown rule(s) {', '.join(unknown)} (known: {', '.join(sorted(detectors)) or 'none'})")
        detectors = {n: d for n, d in detectors.items() if n in wanted}
    host = _as_traces(paths_or_traces, progress, "host")
    guests = _as_traces(guest, progress, "guest")
    if not host and not guests:
        raise ConfigError("analyze: no input given")
    inputs = Inputs(host=host, guest=guests)
    results: dict[str, RuleResult] = {}
    for i, (name, det) in enumerate(sorted(detectors.items())):
        if progress:
            progress(f"rule {name}", i, len(detectors))
        if not cfg.enabled(name):
            results[name] = RuleResult(rule=name, ran=False, notes=["disabled by the rules configuration"])
        else:
            inst = det() if isinstance(det, type) else det
            results[name] = _run_rule(inst, inputs, cfg.for_rule(name, getattr(det, "defaults", {})))
        if progress:
            progress(f"rule {name}", i + 1, len(detectors))
    return Analysis(inputs=inputs, results=results, config=cfg)


@dataclass(eq=False)
class Analysis:
    """What one :func:`analyze` call found.

    Attributes:
        inputs: the traces read (``.host``, ``.guest``).
        results: rule name → :class:`~tracekit.detectors.RuleResult` (rules that could not run have
            ``ran=False``, ``missing`` and ``record_hint``).
        config: the rule settings used.
    """

    inputs: Inputs
    results: dict[str, RuleResult]
    config: Config = field(default_factory=Config)
    evidence_notes: list[str] = field(default_factory=list)

    # -- frames --------------------------------------------------------------------------------------------------
    def _frame(self, rule: str, name: str, schema_: Mapping[str, pl.DataType]) -> pl.DataFrame:
        res = self.results.get(rule)
        if res is None or not res.ran or name not in res.frames:
            return _empty(schema_)
        return res.frames[name]

    @property
    def findings(self) -> pl.DataFrame:
        """Every finding, most severe first: columns ``rule, severity, title, summary, count``."""
        rows = [(f.rule, f.severity, f.title, f.summary, int(f.count)) for f in self.finding_objects]
        return pl.DataFrame(rows, schema=FINDINGS_SCHEMA, orient="row")

    @property
    def finding_objects(self) -> list:
        """The :class:`~tracekit.detectors.Finding` objects, most severe first (then multi-PMI, hotspots, other
        rules; then by count)."""
        out = [f for r in self.results.values() for f in r.findings]
        return sorted(out, key=lambda f: (-_RANK.get(f.severity, -1), _RULE_ORDER.get(f.rule, len(_RULE_ORDER)),
                                          f.rule, -int(f.count)))

    @property
    def multi_pmi_exits(self) -> pl.DataFrame:
        """VM-exits during which more than one PMI was synthesized (conclusive windows), contract schema."""
        return self._frame(MULTI_PMI_RULE, "flagged", MULTI_PMI_SCHEMA)

    @property
    def inconclusive_exits(self) -> pl.DataFrame:
        """Windows overlapping lost events: their PMI count cannot be trusted."""
        return self._frame(MULTI_PMI_RULE, "inconclusive", MULTI_PMI_SCHEMA)

    @property
    def exit_stats(self) -> pl.DataFrame:
        """Exits per vCPU and reason with handling times (like ``perf kvm stat report``)."""
        return self._frame(EXIT_STATS_RULE, "exit_stats", EXIT_STATS_SCHEMA)

    @property
    def hotspots(self) -> pl.DataFrame:
        """One row per lock symbol set: share of time, threads, call paths, bursts, period."""
        return self._frame(HOTSPOTS_RULE, "hotspots", HOTSPOTS_SCHEMA)

    def max_severity(self) -> str | None:
        """The highest severity among the findings, or None when there are none."""
        objs = self.finding_objects
        return objs[0].severity if objs else None

    # -- evidence ------------------------------------------------------------------------------------------------
    @cached_property
    def worst_exits(self) -> pl.DataFrame:
        """The flagged exits whose events the report shows (up to 5): most PMIs first, one per vCPU and route set
        before a second of the same kind, earliest first; row ``i`` is ``window == i`` of :attr:`window_events`."""
        flagged = self.multi_pmi_exits
        if flagged.is_empty():
            return flagged
        kind = pl.struct("vcpu", pl.col("sources").list.join(","))
        ranked = (flagged.sort(["pmi_count", "exit_ts"], descending=[True, False], maintain_order=True)
                  .with_columns(kind.cum_count().over(kind).alias("_nth"))
                  .sort(["_nth", "pmi_count", "exit_ts"], descending=[False, True, False], maintain_order=True))
        return ranked.drop("_nth").head(_WORST_WINDOWS)

    @cached_property
    def window_events(self) -> pl.DataFrame:
        """The event sequence of :attr:`worst_exits`: every event of the vCPU thread from its ``kvm_exit`` to the
        next ``kvm_entry``, rendered as ``trace-cmd report`` prints it (column ``window`` = row of worst_exits)."""
        worst = self.worst_exits
        if worst.is_empty():
            return _empty(WINDOW_EVENTS_SCHEMA)
        parts = []
        for trace in self.inputs.host:
            if not trace.has("kvm_exit"):
                continue
            events, note = _window_events(trace, worst)
            parts.append(events)
            if note:
                self.evidence_notes.append(note)
        parts = [p for p in parts if not p.is_empty()]
        if not parts:
            return _empty(WINDOW_EVENTS_SCHEMA)
        return pl.concat(parts).sort(["window", "ts"])

    # -- figures and output --------------------------------------------------------------------------------------
    @cached_property
    def figures(self) -> dict[str, Any]:
        """Charts as matplotlib Figures, by name (built once, on first use)."""
        from .reports.html import figures_for

        return figures_for(self.results)

    def to_dict(self) -> dict[str, Any]:
        """The content of ``findings.json`` as a dict (see :func:`schema`)."""
        from . import __version__

        inputs = []
        for side, traces in (("host", self.inputs.host), ("guest", self.inputs.guest)):
            for t in traces:
                s = t.summary()
                inputs.append({"path": str(s["path"]), "side": side, "format": s["format"],
                               "version": None if s["version"] is None else str(s["version"]),
                               "events": int(s["events"]), "lost_events": int(s["lost_events"]),
                               "damage": list(s["damage"])})
        findings = []
        for f in self.finding_objects:
            ev = f.evidence if isinstance(f.evidence, pl.DataFrame) else None
            findings.append({"rule": f.rule, "severity": f.severity, "title": f.title, "summary": f.summary,
                             "count": int(f.count), "evidence": _rows(ev, _EVIDENCE_ROWS),
                             "evidence_rows": 0 if ev is None else ev.height})
        rules = [{"rule": r.rule, "ran": bool(r.ran), "missing": list(r.missing), "record_hint": r.record_hint,
                  "notes": list(r.notes)} for r in self.results.values()]
        return {
            "tracekit_version": __version__,
            "schema_version": SCHEMA_VERSION,
            "inputs": inputs,
            "rules": rules,
            "findings": findings,
            "multi_pmi_exits": _rows(self.multi_pmi_exits.select(
                [c for c in MULTI_PMI_SCHEMA if c != "inconclusive" and c in self.multi_pmi_exits.columns])),
            "inconclusive_exits": _rows(self.inconclusive_exits.select(
                [c for c in MULTI_PMI_SCHEMA if c != "inconclusive" and c in self.inconclusive_exits.columns])),
            "exit_stats": _rows(self.exit_stats),
            "hotspots": _rows(self.hotspots),
        }

    def to_json(self, indent: int | None = 2) -> str:
        """``findings.json`` as text."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, directory: str | os.PathLike, *, json_only: bool = False) -> dict[str, Path]:
        """Write ``report.html`` (self-contained), one PNG per chart and ``findings.json`` into ``directory``.

        Args:
            directory: created when missing.
            json_only: write only ``findings.json``.

        Returns:
            What was written: ``{"json": path, "html": path, <chart name>: png path, …}``.

        Raises:
            TracekitError: the directory cannot be written.
        """
        out = Path(directory)
        written: dict[str, Path] = {}
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "findings.json").write_text(self.to_json())
            written["json"] = out / "findings.json"
            if json_only:
                return written
            from .reports.html import figure_png, render_report

            images = {name: figure_png(fig) for name, fig in self.figures.items()}
            for name, png in images.items():
                (out / f"{name}.png").write_bytes(png)
                written[name] = out / f"{name}.png"
            (out / "report.html").write_text(render_report(self, images), encoding="utf-8")
            written["html"] = out / "report.html"
        except OSError as exc:
            raise ConfigError(f"{out}: cannot write the report: {exc.strerror or exc}") from exc
        return written

    def __repr__(self) -> str:
        ran = sum(r.ran for r in self.results.values())
        return (f"<Analysis {len(self.inputs.all)} input(s), {ran}/{len(self.results)} rules ran, "
                f"{sum(len(r.findings) for r in self.results.values())} finding(s)>")

    def _repr_html_(self) -> str:
        from .reports.html import render_fragment

        return render_fragment(self)


def _window_events(trace: Trace, worst: pl.DataFrame) -> tuple[pl.DataFrame, str | None]:
    """Events of ``trace`` that fall in the windows of ``worst`` (pid and [exit_ts, entry_ts]), rendered; and why
    the text is plain ``field=value`` when the print-fmt renderer failed."""
    end = pl.col("entry_ts").fill_null(pl.col("exit_ts") + 10_000_000)  # open window: show 10 ms after the exit
    wins = worst.select(pl.int_range(pl.len(), dtype=pl.Int32).alias("window"), pl.col("pid").cast(pl.Int32),
                        pl.col("exit_ts").alias("_lo"), end.alias("_hi"))
    pids = wins["pid"].unique().to_list()
    lo, hi = wins["_lo"].min(), wins["_hi"].max()
    frames: dict[str, pl.DataFrame] = {}
    for name in trace.frames:  # full ``system:event`` keys, as ``formats`` is keyed
        df = trace.events(name)
        if "ts" not in df.columns or "common_pid" not in df.columns or df.is_empty():
            continue
        sub = df.filter(pl.col("ts").is_between(lo, hi) & pl.col("common_pid").is_in(pids))
        if not sub.is_empty():
            frames[name] = sub
    if not frames:
        return _empty(WINDOW_EVENTS_SCHEMA), None
    texts, failed = [], []
    for name, sub in frames.items():  # one event at a time: a renderer failure costs only that event's text
        one = Trace(source=trace.source, format=trace.format, frames={name: sub}, metadata=trace.metadata,
                    formats=trace.formats, kallsyms=trace.kallsyms, short_names=False)
        try:
            part = one.render()
        except (TracekitError, ImportError, AttributeError, NotImplementedError, ValueError, TypeError,
                pl.exceptions.PolarsError) as exc:
            failed.append(f"{name} ({type(exc).__name__})")
            part = _plain_render({name: sub})
        texts.append(part.select(pl.col("ts").cast(pl.Int64), pl.col("cpu").cast(pl.Int32),
                                 pl.col("common_pid").cast(pl.Int32),
                                 pl.col("common_comm").cast(pl.String), pl.col("event").cast(pl.String),
                                 pl.col("info").cast(pl.String)))
    text = pl.concat(texts).sort("ts", maintain_order=True)
    note = (f"shown as field=value because rendering their print format failed: {', '.join(failed)}"
            if failed else None)
    text = text.select(pl.col("ts").cast(pl.Int64), pl.col("cpu").cast(pl.Int32),
                       pl.col("common_pid").cast(pl.Int32).alias("pid"),
                       pl.col("common_comm").cast(pl.String).alias("comm"),
                       pl.col("event").cast(pl.String).str.replace(r"^[^:]*:", ""),
                       pl.col("info").cast(pl.String))
    joined = text.join(wins, on="pid", how="inner").filter(pl.col("ts").is_between(pl.col("_lo"), pl.col("_hi")))
    return joined.select(pl.col("window"), pl.col("ts"), ((pl.col("ts") - pl.col("_lo")) / 1e3).alias("rel_us"),
                         "cpu", "pid", "comm", "event", "info").cast(WINDOW_EVENTS_SCHEMA), note


def _plain_render(frames: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """``field=value`` text for each event, when the print-fmt renderer is not available."""
    common = {"ts", "cpu", "common_pid", "common_comm", "common_flags", "common_preempt_count", "buffer"}
    parts = []
    for name, df in frames.items():
        own = [c for c in df.columns if c not in common]
        pieces = []
        for c in own:
            col = pl.col(c)
            if df.schema[c].is_nested():
                col = col.list.eval(pl.element().cast(pl.String)).list.join(",")
            pieces.append(pl.concat_str([pl.lit(f"{c}="), col.cast(pl.String).fill_null("?")]))
        info = pl.concat_str(pieces, separator=" ") if pieces else pl.lit("")
        comm = pl.col("common_comm") if "common_comm" in df.columns else pl.lit(None, pl.String)
        parts.append(df.select(pl.col("ts").cast(pl.Int64), pl.col("cpu").cast(pl.Int32),
                               pl.col("common_pid").cast(pl.Int32), comm.cast(pl.String).alias("common_comm"),
                               pl.lit(name).alias("event"), info.alias("info")))
    return pl.concat(parts).sort("ts")
