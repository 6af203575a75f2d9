"""``tracekit.analyze_fleet``: convert and analyse many traces as tasks on a Dask distributed cluster and merge what
the rules found into one fleet report.

Each trace is one task (:func:`analyze_one`): ``tracekit convert`` to ``OUT/datasets/<n>_<name>/``, then
:func:`tracekit.analyze` on that dataset; the task returns the JSON-able ``Analysis.to_dict()`` plus per-trace
numbers, so only small dicts travel back to the client. Without a scheduler address a
:class:`distributed.LocalCluster` of worker PROCESSES (≥ 2, one thread each) is started and closed again.
"""

from __future__ import annotations

import glob
import html
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from .errors import ConfigError, TracekitError

__all__ = ["analyze_fleet", "analyze_one", "FleetResult", "TRACE_ROWS_SCHEMA", "HOST_ROWS_SCHEMA", "expand_inputs"]

FLEET_SCHEMA_VERSION = "1.0"

TRACE_ROWS_SCHEMA = {
    "host": pl.String, "trace": pl.String, "ok": pl.Boolean, "error": pl.String, "max_severity": pl.String,
    "findings": pl.Int64, "events": pl.Int64, "lost_events": pl.Int64, "exits": pl.Int64,
    "double_pmi_exits": pl.Int64, "inconclusive_exits": pl.Int64, "double_pmi_rate": pl.Float64,
    "hotspot_symbol": pl.String, "hotspot_samples": pl.Int64, "hotspot_total_samples": pl.Int64,
    "hotspot_share": pl.Float64,
}
"""One row per trace. ``double_pmi_rate`` = VM-exits with more than one PMI / VM-exits counted by exit-stats;
``hotspot_share`` = the ``share`` the mutex-hotspots rule gives its top symbol (null without samples)."""

HOST_ROWS_SCHEMA = {
    "host": pl.String, "traces": pl.Int64, "failed": pl.Int64, "max_severity": pl.String, "exits": pl.Int64,
    "double_pmi_exits": pl.Int64, "inconclusive_exits": pl.Int64, "double_pmi_rate": pl.Float64,
    "hotspot_samples": pl.Int64, "hotspot_total_samples": pl.Int64, "hotspot_share": pl.Float64,
}
"""One row per host: sums over its traces; ``double_pmi_rate`` is the ratio of the sums (not a mean of per-trace
rates); ``hotspot_share`` is the traces' shares weighted by their ``hotspot_total_samples``."""

_SEV_RANK = {None: 0, "info": 1, "warning": 2, "error": 3}
_GLOB_CHARS = set("*?[")


def expand_inputs(paths_or_glob: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """The input paths: a glob pattern expanded (sorted), a path, or a list of either.

    Raises:
        ConfigError: nothing matches.
    """
    items = [paths_or_glob] if isinstance(paths_or_glob, str | os.PathLike) else list(paths_or_glob)
    out: list[Path] = []
    for item in items:
        s = os.fspath(item)
        if _GLOB_CHARS & set(s) and not Path(s).exists():
            out.extend(Path(p) for p in sorted(glob.glob(s, recursive=True)))
        else:
            out.append(Path(s))
    if not out:
        raise ConfigError(f"analyze-fleet: no input matches {paths_or_glob!r}")
    return out


def _host_of(trace_md: Mapping[str, Any], path: Path, host_from: str) -> str:
    if host_from == "parent":
        return path.parent.name or path.stem
    if host_from == "stem":
        return path.stem
    uname = str(trace_md.get("uname") or "").split()
    return uname[1] if len(uname) > 1 else path.stem


def _trace_row(host: str, trace: str, d: dict[str, Any] | None, error: str | None) -> dict[str, Any]:
    row = dict.fromkeys(TRACE_ROWS_SCHEMA)
    row.update(host=host, trace=trace, ok=error is None, error=error)
    if d is None:
        return row
    findings = d.get("findings", [])
    row["findings"] = len(findings)
    row["max_severity"] = max((f["severity"] for f in findings), key=lambda s: _SEV_RANK.get(s, 0), default=None)
    row["events"] = sum(i.get("events", 0) for i in d.get("inputs", []))
    row["lost_events"] = sum(i.get("lost_events", 0) for i in d.get("inputs", []))
    row["exits"] = sum(int(r.get("count") or 0) for r in d.get("exit_stats", []))
    row["double_pmi_exits"] = len(d.get("multi_pmi_exits", []))
    row["inconclusive_exits"] = len(d.get("inconclusive_exits", []))
    row["double_pmi_rate"] = row["double_pmi_exits"] / row["exits"] if row["exits"] else None
    hs = [h for h in d.get("hotspots", []) if h.get("samples")]
    if hs:
        top = max(hs, key=lambda h: h["samples"])
        row.update(hotspot_symbol=top.get("symbol"), hotspot_samples=int(top["samples"]),
                   hotspot_total_samples=int(top.get("total_samples") or 0))
        row["hotspot_share"] = None if top.get("share") is None else float(top["share"])
    return row


def analyze_one(path: str, dataset_dir: str | None, config: Any = None, host_from: str = "uname") -> dict[str, Any]:
    """One fleet task: convert ``path`` to ``dataset_dir`` (when given) and analyse the dataset.

    Returns:
        ``{"path", "host", "dataset", "analysis": Analysis.to_dict() | None, "error": str | None, "row": {…}}``;
        a trace that cannot be read gives ``error`` (the TracekitError's text) instead of failing the fleet.
    """
    from .analysis import analyze
    from .stream import convert

    p = Path(path)
    try:
        if dataset_dir is not None:
            target = convert(p, dataset_dir, overwrite=True, stream=True)  # trace.dat: page batches
        else:
            target = p
        a = analyze(target, config=config)
        d = a.to_dict()
        md = a.inputs.host[0].metadata if a.inputs.host else {}
        host = _host_of(md, p, host_from)
        return {"path": str(p), "host": host, "dataset": str(target), "analysis": d, "error": None,
                "row": _trace_row(host, str(p), d, None)}
    except TracekitError as exc:
        host = _host_of({}, p, host_from)
        return {"path": str(p), "host": host, "dataset": None, "analysis": None, "error": str(exc),
                "row": _trace_row(host, str(p), None, str(exc))}


def _worst_first(df: pl.DataFrame) -> pl.DataFrame:
    rank = pl.col("max_severity").replace_strict(
        {k: v for k, v in _SEV_RANK.items() if k is not None}, default=0, return_dtype=pl.Int32)
    return (df.with_columns(rank.alias("_rank"))
            .sort(["_rank", "double_pmi_exits", "double_pmi_rate", "hotspot_share", "host"],
                  descending=[True, True, True, True, False], nulls_last=True)
            .drop("_rank"))


@dataclass(eq=False)
class FleetResult:
    """What :func:`analyze_fleet` found.

    Attributes:
        traces: one row per trace (:data:`TRACE_ROWS_SCHEMA`), worst first.
        hosts: one row per host (:data:`HOST_ROWS_SCHEMA`), worst first.
        results: the per-trace task results (``analysis`` = that trace's ``findings.json`` content).
        workers: how many worker processes ran the tasks.
    """

    traces: pl.DataFrame
    hosts: pl.DataFrame
    results: list[dict[str, Any]]
    workers: int

    def to_dict(self) -> dict[str, Any]:
        """The content of the fleet ``findings.json``."""
        return {"fleet_schema_version": FLEET_SCHEMA_VERSION, "workers": self.workers,
                "hosts": self.hosts.to_dicts(), "traces": self.traces.to_dicts(),
                "per_trace": [{k: r[k] for k in ("path", "host", "dataset", "error", "analysis")}
                              for r in self.results]}

    def save(self, directory: str | os.PathLike) -> dict[str, Path]:
        """Write ``findings.json`` and ``report.html`` (every string escaped) into ``directory``."""
        out = Path(directory)
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "findings.json").write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False))
            (out / "report.html").write_text(_html(self), encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{out}: cannot write the fleet report: {exc.strerror or exc}") from exc
        return {"json": out / "findings.json", "html": out / "report.html"}


def _table(df: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape("" if v is None else str(v))

    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in df.iter_rows())
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(r: FleetResult) -> str:
    return ("<!doctype html><html><head><meta charset='utf-8'><title>tracekit fleet report</title>"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse;margin:1em 0}"
            "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}</style></head><body>"
            f"<h1>tracekit fleet report</h1><p>{r.traces.height} traces, {r.hosts.height} hosts, "
            f"{r.workers} workers</p><h2>Hosts (worst first)</h2>{_table(r.hosts)}"
            f"<h2>Traces (worst first)</h2>{_table(r.traces)}</body></html>")


def merge(results: list[dict[str, Any]], workers: int = 0) -> FleetResult:
    """Merge per-trace task results into per-trace and per-host rows, worst first."""
    traces = pl.DataFrame([r["row"] for r in results], schema=TRACE_ROWS_SCHEMA, orient="row")
    sev = pl.col("max_severity").replace_strict(
        {k: v for k, v in _SEV_RANK.items() if k is not None}, default=0, return_dtype=pl.Int32)
    hosts = (traces.with_columns(sev.alias("_rank"))
             .group_by("host", maintain_order=True)
             .agg(pl.len().cast(pl.Int64).alias("traces"), (~pl.col("ok")).sum().cast(pl.Int64).alias("failed"),
                  pl.col("max_severity").sort_by("_rank").last().alias("max_severity"),
                  (pl.col("hotspot_share") * pl.col("hotspot_total_samples")).sum().alias("_wshare"),
                  *(pl.col(c).sum().cast(pl.Int64) for c in ("exits", "double_pmi_exits", "inconclusive_exits",
                                                              "hotspot_samples", "hotspot_total_samples")))
             .with_columns(
                 pl.when(pl.col("exits") > 0).then(pl.col("double_pmi_exits") / pl.col("exits")).otherwise(None)
                 .alias("double_pmi_rate"),
                 pl.when(pl.col("hotspot_total_samples") > 0)
                 .then(pl.col("_wshare") / pl.col("hotspot_total_samples")).otherwise(None)
                 .alias("hotspot_share"))
             .select(list(HOST_ROWS_SCHEMA)).cast(HOST_ROWS_SCHEMA))
    return FleetResult(traces=_worst_first(traces), hosts=_worst_first(hosts), results=results, workers=workers)


def analyze_fleet(paths_or_glob: str | os.PathLike | Iterable[str | os.PathLike], out_dir: str | os.PathLike, *,
                  scheduler: str | None = None, workers: int | None = None, config: Any = None,
                  host_from: str = "uname", convert: bool = True, save: bool = True) -> FleetResult:
    """Convert and analyse every trace as a task on a Dask distributed cluster; merge into one fleet report.

    Args:
        paths_or_glob: a glob (``"hosts/*/trace.dat"``), a path, or a list of paths.
        out_dir: where ``findings.json``, ``report.html`` and ``datasets/`` (the converted traces) go. With a
            remote scheduler it must be a path the workers can write (shared storage).
        scheduler: a Dask scheduler address (``tcp://host:8786``); None starts a LocalCluster of worker processes.
        workers: worker processes of the LocalCluster (default ``max(2, cpu count)``, capped at 8).
        config: rule settings, as for :func:`tracekit.analyze`.
        host_from: how a trace's host is named: ``uname`` (the nodename the trace records, else the file stem),
            ``parent`` (the directory holding the file) or ``stem``.
        convert: convert each trace to Parquet first (False: analyse the input directly).
        save: write the fleet report into ``out_dir``.

    Returns:
        A :class:`FleetResult`.

    Raises:
        ConfigError: no input matches, the scheduler cannot be reached or ``out_dir`` cannot be written.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ConfigError("analyze-fleet needs Dask distributed: pip install 'tracekit[fleet]'") from exc
    if host_from not in ("uname", "parent", "stem"):
        raise ConfigError(f"host_from must be uname, parent or stem, not {host_from!r}")
    paths = expand_inputs(paths_or_glob)
    out = Path(out_dir).absolute()
    ds_root = out / "datasets"
    ds_dirs = [str(ds_root / f"{i:04d}_{p.stem}") if convert else None for i, p in enumerate(paths)]
    cluster = None
    try:
        if scheduler is None:
            n = workers or max(2, min(os.cpu_count() or 2, 8))
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
        else:
            client = Client(scheduler, timeout="20s")
    except OSError as exc:
        if cluster is not None:
            cluster.close()
        raise ConfigError(f"cannot reach the Dask scheduler {scheduler!r}: {exc}") from exc
    try:
        nworkers = len(client.scheduler_info().get("workers", {}))
        futures = client.map(analyze_one, [str(p.absolute()) for p in paths], ds_dirs, config=config,
                             host_from=host_from, pure=False)
        results = client.gather(futures)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    fr = merge(results, nworkers)
    if save:
        fr.save(out)
    return fr
