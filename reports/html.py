"""The HTML report: one self-contained file (charts embedded as base64 PNG, inline CSS, no script, no network).

Rendered with Jinja2 from ``templates/*.html.j2`` with autoescape on: every string that comes from a trace (comms,
paths, symbols, event text) is HTML-escaped. Reports never call parsers; they read an analysis' results
(duck-typed: ``inputs``, ``results``, ``finding_objects``, ``multi_pmi_exits`` … of :class:`tracekit.Analysis`).
"""

from __future__ import annotations

import base64
import importlib
import io
import math
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import polars as pl

__all__ = ["render_report", "render_fragment", "figure_png", "figures_for", "CHART_TITLES"]

#: chart name → caption, in the order the report shows them
CHART_TITLES = {
    "pmi_histogram": "PMIs synthesized per VM-exit",
    "flagged_timeline": "Flagged VM-exits over time, per vCPU",
    "exit_reasons": "VM-exit reasons",
    "handling_times": "Exit handling time per reason",
    "msr_activity": "Guest PMU MSR writes over time",
    "hotspot_heatmap": "Share of time in the lock, per thread and time bucket",
    "hotspot_share": "Share of time in the lock over time (bursts shaded)",
    "hotspot_paths": "Top call paths into the lock",
    "hotspot_waits": "Lock wait times",
}
_MAX_ROWS = 200
_SEV_ORDER = {"error": 0, "warning": 1, "info": 2}


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    return env


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """A matplotlib Figure as PNG bytes (through its own Agg canvas)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def figures_for(results: Mapping[str, Any]) -> dict[str, Any]:
    """Every chart the results allow: the KVM charts and, when that module is present, the mutex hotspot charts.

    Args:
        results: rule name → RuleResult.

    Returns:
        chart name → matplotlib Figure.
    """
    from . import kvm_charts

    out = dict(kvm_charts.figures(results))
    hot = results.get("mutex-hotspots")
    if hot is not None and hot.ran:
        try:
            mod = importlib.import_module(f"{__package__}.hotspot_charts")
        except ModuleNotFoundError:
            mod = None
        fn = next((getattr(mod, n) for n in ("figures", "hotspot_figures", "charts") if hasattr(mod, n)), None)
        if fn is not None:
            for name, fig in (fn(hot) or {}).items():
                if fig is not None:
                    out[name if name.startswith("hotspot") else f"hotspot_{name}"] = fig
    return out


# -- value formatting -----------------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "; ".join(_fmt(v) for v in value)
    return str(value)


def _table(df: pl.DataFrame | None, limit: int = _MAX_ROWS, columns: list[str] | None = None) -> dict[str, Any]:
    """A frame as {columns, rows (strings), total, shown} for the templates."""
    if df is None:
        return {"columns": [], "rows": [], "total": 0, "shown": 0}
    if columns is not None:
        df = df.select([c for c in columns if c in df.columns])
    shown = df.head(limit)
    rows = [[_fmt(v) for v in r] for r in shown.iter_rows()]
    return {"columns": list(df.columns), "rows": rows, "total": df.height, "shown": shown.height}


def _inputs(analysis: Any) -> list[dict[str, Any]]:
    out = []
    for side, traces in (("host", analysis.inputs.host), ("guest", analysis.inputs.guest)):
        for t in traces:
            s = t.summary()
            dur = s.get("duration_s")
            out.append({
                "side": side, "path": s.get("path"), "format": s.get("format"), "version": s.get("version"),
                "compression": s.get("compression"), "kernel": s.get("uname"), "clock": s.get("clock"),
                "cpus": s.get("cpus"), "duration": None if dur is None else f"{dur:,.3f} s",
                "events": f"{s.get('events', 0):,}", "lost": f"{s.get('lost_events', 0):,}",
                "lost_n": s.get("lost_events", 0), "damage": (s.get("damage") or [])[:5],
                "damage_more": (s.get("damage") or [])[5:],
                "top_events": [(e, f"{n:,}") for e, n in t.counts().head(12).iter_rows()],
            })
    return out


def _findings(analysis: Any) -> list[dict[str, Any]]:
    out = []
    for f in analysis.finding_objects:
        ev = f.evidence if isinstance(f.evidence, pl.DataFrame) else None
        out.append({"rule": f.rule, "severity": f.severity, "title": f.title, "summary": f.summary,
                    "count": f"{int(f.count):,}", "evidence": _table(ev, 50) if ev is not None else None})
    return out


def _rules(analysis: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows, not_run = [], []
    for name, r in sorted(analysis.results.items()):
        disabled = not r.ran and any("disabled" in n for n in r.notes)
        status = "ran" if r.ran else "disabled" if disabled else "could not run"
        rows.append({"rule": name, "status": status, "findings": len(r.findings), "notes": r.notes})
        if not r.ran and not disabled:
            not_run.append({"rule": name, "missing": r.missing, "record_hint": r.record_hint, "notes": r.notes})
    return rows, not_run


def _worst_windows(analysis: Any) -> list[dict[str, Any]]:
    ev = analysis.window_events
    if ev.is_empty():
        return []
    flagged = analysis.worst_exits
    out = []
    for i, w in enumerate(flagged.iter_rows(named=True)):
        rows = ev.filter(pl.col("window") == i).drop("window")
        dur = None if w.get("entry_ts") is None else (w["entry_ts"] - w["exit_ts"]) / 1e3
        out.append({"vcpu": w.get("vcpu"), "pid": w.get("pid"), "cpu": w.get("cpu"), "exit_ts": w.get("exit_ts"),
                    "reason": w.get("exit_reason"), "pmis": w.get("pmi_count"), "sources": _fmt(w.get("sources")),
                    "duration": "still open at trace end" if dur is None else f"{dur:,.1f} µs",
                    "table": _table(rows, 120)})
    return out


def _hotspots(analysis: Any) -> list[dict[str, Any]]:
    """One entry per symbol set: headline numbers and the by-thread / call-path / burst sub-tables."""
    out = []
    for row in analysis.hotspots.iter_rows(named=True):
        def sub(key: str, limit: int = 15, row: dict = row) -> dict[str, Any]:
            items = row.get(key) or []
            df = pl.DataFrame(items) if items else None
            if df is not None:  # shares read as percentages
                df = df.with_columns(pl.format("{} %", (pl.col(c) * 100).round(2)).alias(c)
                                     for c in df.columns if c == "share" or c == "peak")
            return _table(df, limit)

        share = row.get("share")
        if not row.get("samples") and not share:
            out.append({"symbol": row.get("symbol"), "empty": True})
            continue
        out.append({"symbol": row.get("symbol"), "empty": False, "share": "—" if share is None else f"{100 * share:.2f} %",
                    "samples": _fmt(row.get("samples")), "total": _fmt(row.get("total_samples")),
                    "period": "—" if row.get("period_s") is None else f"{row['period_s']:.2f} s",
                    "by_thread": sub("by_thread"), "top_paths": sub("top_paths", 10), "bursts": sub("bursts", 20)})
    return out


def _context(analysis: Any, images: Mapping[str, bytes]) -> dict[str, Any]:
    from tracekit import __version__

    rules, not_run = _rules(analysis)
    charts = []
    names = [n for n in CHART_TITLES if n in images] + sorted(n for n in images if n not in CHART_TITLES)
    for n in names:
        charts.append({"name": n, "title": CHART_TITLES.get(n, n.replace("_", " ")),
                       "src": "data:image/png;base64," + base64.b64encode(images[n]).decode("ascii"),
                       "file": f"{n}.png"})
    mp = analysis.results.get("multi-pmi-per-exit")
    sev = [f.severity for f in analysis.finding_objects]
    return {
        "version": __version__,
        "inputs": _inputs(analysis),
        "findings": _findings(analysis),
        "counts": {s: sev.count(s) for s in ("error", "warning", "info")},
        "rules": rules,
        "not_run": not_run,
        "multi_pmi_ran": bool(mp is not None and mp.ran),
        "flagged": _table(analysis.multi_pmi_exits),
        "inconclusive": _table(analysis.inconclusive_exits, 50),
        "worst": _worst_windows(analysis),
        "evidence_notes": list(getattr(analysis, "evidence_notes", [])),
        "exit_stats": _table(analysis.exit_stats.sort("count", descending=True)
                             if "count" in analysis.exit_stats.columns else analysis.exit_stats, 40),
        "hotspots": _hotspots(analysis),
        "charts": charts,
    }


def render_report(analysis: Any, images: Mapping[str, bytes]) -> str:
    """The whole report page.

    Args:
        analysis: a :class:`tracekit.Analysis`.
        images: chart name → PNG bytes (embedded as data URIs).

    Returns:
        HTML text (UTF-8, self-contained).
    """
    return _env().get_template("report.html.j2").render(**_context(analysis, images))


def render_fragment(analysis: Any) -> str:
    """A short HTML summary for notebooks (``Analysis._repr_html_``): findings, rules, flagged exits."""
    return _env().get_template("fragment.html.j2").render(**_context(analysis, {}))
