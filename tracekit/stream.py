"""``tracekit convert``: write a trace as a directory of Parquet files, one per event, that
:func:`tracekit.load` reads back lazily (``tracekit.parsers.parquet_dataset``).

Layout of a converted DIR (``DATASET_VERSION``)::

    DIR/tracekit.json               the manifest: metadata, event formats, event → file, counts, damage
    DIR/metadata.json               what ``tracekit info`` shows, lost events per CPU (for people and other tools)
    DIR/<system>/<event>.parquet    one file per event (DIR/<event>.parquet without a system), rows in ``ts``
                                    order, row groups of ≤ ROW_GROUP rows
    DIR/_tables/<name>.parquet      lost_events, lost_marks, cmdlines, perf tables …, kallsyms

"ts sorted" means: inside each event file the rows are in non-decreasing ``ts`` (ties keep the reader's order:
buffer, CPU, then ring-buffer order), so row-group statistics on ``ts`` are monotone and a ``ts`` filter prunes
row groups. Rows of different events are in different files; no order across files is promised.

Memory: with ``stream=True`` a trace.dat is read in batches of pages (``parsers/tracedat/stream.py``); each batch's
rows of each event become a sorted run file (``DIR/_runs``, removed at the end), then per event, time windows of
about PART_ROWS rows (cut from a sample of ``ts``) read only the run row groups overlapping them, sort and write
``<system>/<event>/part-NNNNN.parquet`` (parts in ts order). What is held: one batch of pages (the file's pages are
dropped from the map once copied out), one window, and per run/SAMPLE rows a few bytes of bookkeeping. Peak RSS is
flat once the input fills that working set: 0.8M → 12.8M events of a real trace, 176.7 → 182.7 MiB
(``benchmarks/bench_stream_rss.py --cut-from``); a smaller input (tens of thousands of events) uses less. Without it (and for every other input) the ordinary in-memory reader runs and
ONE event frame at a time is built, written and dropped: peak RSS grows with the input.
"""

from __future__ import annotations

import json
import os
import shutil
from array import array
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from .errors import ConfigError, TracekitError
from .model import TS, Trace

__all__ = ["convert", "DATASET_VERSION", "ROW_GROUP", "MANIFEST", "event_file_name"]

DATASET_VERSION = 1
ROW_GROUP = 65_536
"""Rows per Parquet row group (bounded, so a scan reads at most this many rows of a column at a time)."""
MANIFEST = "tracekit.json"
_KALLSYMS_SCHEMA = {"addr": pl.UInt64, "type": pl.String, "name": pl.String, "module": pl.String}


def event_file_name(key: str) -> str:
    """Path of event ``system:event`` inside DIR: ``system/event.parquet`` (characters other than letters, digits
    and ``-_.+`` replaced by ``_``)."""
    system, _, event = key.rpartition(":")
    parts = [p for p in (system, event) if p]
    safe = ["".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in p) for p in parts]
    return "/".join(safe[:-1] + [safe[-1] + ".parquet"])


def _jsonable(value: Any) -> Any:
    """``value`` as JSON types (unknown objects as their ``str``), or None when it cannot be made so."""
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return None


def _manifest(trace: Trace, files: dict[str, str], counts: dict[str, int], skipped: list[str]) -> dict[str, Any]:
    md = dict(trace.metadata)
    printk = md.pop("printk_formats", None)
    fmts = {}
    for key, fmt in trace.formats.items():
        if fmt is not None and getattr(fmt, "text", ""):
            fmts[key] = {"system": fmt.system, "text": fmt.text}
    return {
        "dataset_version": DATASET_VERSION,
        "source": str(trace.source),
        "source_format": trace.format,
        "metadata": {k: v for k, v in ((k, _jsonable(v)) for k, v in md.items()) if v is not None},
        "printk_formats": {str(k): v for k, v in printk.items()} if isinstance(printk, dict) else {},
        "formats": fmts,
        "events": files,
        "counts": counts,
        "damage": [str(d) for d in trace.damage] + skipped,
        "row_group": ROW_GROUP,
        "ts_sorted": "per event: rows in non-decreasing ts (a directory event: part files in name order, each sorted)",
    }


def _write(df: pl.DataFrame, path: Path) -> None:
    df.write_parquet(path, compression="zstd", row_group_size=ROW_GROUP, statistics=True)


PART_ROWS = ROW_GROUP
"""Rows aimed at per part file of a streamed event (time windows cut from a sample of the ``ts`` column)."""
RUN_GROUP = 8_192
"""Rows per row group of a sorted run: a window's ``ts`` filter skips the run's row groups outside it."""
SAMPLE = 256
"""Every SAMPLE-th ``ts`` of each run (from its first) is kept, 8 bytes per SAMPLE events, to cut the windows by row
count: each kept ``ts`` stands for at most SAMPLE rows."""
SCAN_FILES = 8
"""Run files read by one scan while merging a window."""


def _edges(samples: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Window edges of one event: about PART_ROWS rows apart (each kept ``ts`` stands for SAMPLE rows), so a burst
    of events is cut as finely as a quiet stretch; [lo, hi + 1) covered."""
    ts = np.sort(samples)
    step = max(1, PART_ROWS // SAMPLE)
    inner = ts[step::step]
    return np.unique(np.concatenate([[lo], inner, [hi + 1]]).astype(np.int64))


def _convert_stream(path: Path, out: Path, batch_pages: int | None, **options) -> tuple[Trace, dict, dict, list,
                                                                                       int | None, int | None]:
    """trace.dat → runs of sorted rows per (CPU, batch of pages) → per event, time windows merged into
    ``<system>/<event>/part-NNNNN.parquet`` (parts in ts order, rows in ts order inside)."""
    from .parsers.tracedat.stream import BATCH_PAGES, open_stream

    header, batches = open_stream(path, batch_pages=batch_pages or BATCH_PAGES, **options)
    runs_root = out / "_runs"
    # per event, 16 bytes per run (its first and last ts; run i is runs_root/<event>/<i>.parquet) and 8 bytes per
    # SAMPLE rows: the bookkeeping that grows with the input stays a few hundred KB for 10M events
    runs: dict[str, tuple[array, array]] = {}
    samples: dict[str, array] = {}
    counts: dict[str, int] = {}
    for key, df in batches:
        d = runs_root / event_file_name(key)[: -len(".parquet")]
        counts[key] = counts.get(key, 0) + df.height
        if df.height:
            first, last = runs.setdefault(key, (array("q"), array("q")))
            d.mkdir(parents=True, exist_ok=True)
            df.write_parquet(d / f"{len(first):06d}.parquet", compression="lz4", statistics=True,
                             row_group_size=RUN_GROUP)
            first.append(int(df[TS][0]))
            last.append(int(df[TS][-1]))
            samples.setdefault(key, array("q")).extend(df[TS].to_numpy()[::SAMPLE].astype(np.int64))
        del df
    files: dict[str, str] = {}
    span = {key: (min(first), max(last)) for key, (first, last) in runs.items()}
    for key, (first, last) in runs.items():
        name = event_file_name(key)[: -len(".parquet")]
        dest = out / name
        dest.mkdir(parents=True, exist_ok=True)
        lo, hi = span[key]
        edges = _edges(np.frombuffer(samples.pop(key, array("q")), np.int64), lo, hi)
        ra, rb = np.frombuffer(first, np.int64), np.frombuffer(last, np.int64)
        k = 0
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            # only the runs overlapping the window
            near = [runs_root / name / f"{i:06d}.parquet" for i in np.flatnonzero((ra < b) & (rb >= a))]
            if not near:
                continue
            keep = (pl.col(TS) >= int(a)) & (pl.col(TS) < int(b))
            # a few runs per scan: a sparse event has a tiny run per batch, all inside one window, and one scan over
            # hundreds of files holds a reader per file
            win = pl.concat([pl.scan_parquet(near[i:i + SCAN_FILES]).filter(keep).collect()
                             for i in range(0, len(near), SCAN_FILES)]).sort(TS, maintain_order=True)
            if win.height:
                _write(win, dest / f"part-{k:05d}.parquet")
                k += 1
            del win
        files[key] = name
    shutil.rmtree(runs_root, ignore_errors=True)
    lo = min((v[0] for v in span.values()), default=None)
    hi = max((v[1] for v in span.values()), default=None)
    return header.trace(), files, counts, [], lo, hi


def convert(source: str | os.PathLike | Trace, out_dir: str | os.PathLike, *, overwrite: bool = False,
            stream: bool = False, batch_pages: int | None = None, **options) -> Path:
    """Write ``source`` as a Parquet dataset directory (one file per event, rows ``ts`` sorted).

    Args:
        source: a path :func:`tracekit.load` reads, or a Trace already read.
        out_dir: the directory to create.
        overwrite: replace ``out_dir`` when it already holds a dataset.
        stream: read a trace.dat in bounded batches of pages (``parsers/tracedat/stream.py``) and write each
            event as a directory of part files (``<system>/<event>/part-NNNNN.parquet``, parts in ts order);
            other inputs are read whole as without it.
        batch_pages: pages per batch when streaming (default 256).
        **options: passed to the reader (``buffer=`` …).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        TracekitError: the input cannot be read; ConfigError: ``out_dir`` exists (without ``overwrite``) or cannot
            be written.
    """
    from .api import load

    out = Path(out_dir)
    streamed = False
    if stream and not isinstance(source, Trace):
        from .api import detect_format

        streamed = detect_format(source) == "trace.dat"
    trace = source if isinstance(source, Trace) or streamed else load(source, **options)
    if out.exists():
        if not overwrite and any(out.iterdir()):
            raise ConfigError(f"{out}: exists and is not empty (use overwrite=True / --force)")
        if overwrite and (out / MANIFEST).is_file():
            shutil.rmtree(out)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "_tables").mkdir(exist_ok=True)
        files: dict[str, str] = {}
        counts: dict[str, int] = {}
        skipped: list[str] = []
        lo = hi = None  # time range, kept while writing (Trace.summary() would build every frame at once)
        if streamed:
            trace, files, counts, skipped, lo, hi = _convert_stream(Path(source), out, batch_pages, **options)
        for key in list(trace.frames):
            try:
                df = trace.events(key)
            except TracekitError as exc:  # one event that cannot be decoded does not lose the others
                skipped.append(str(exc))
                continue
            if TS in df.columns and df.height > 1 and not df[TS].is_sorted():
                df = df.sort(TS, maintain_order=True)
            if TS in df.columns and df.height:
                a, b = df[TS].min(), df[TS].max()
                lo = a if lo is None else min(lo, a)
                hi = b if hi is None else max(hi, b)
            name = event_file_name(key)
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            _write(df, out / name)
            files[key] = name
            counts[key] = df.height
            trace._cache.pop(key, None)  # noqa: SLF001 - drop the frame once written: one event in memory at a time
            del df
        _write(trace.lost_events, out / "_tables" / "lost_events.parquet")
        for name, table in trace.tables.items():
            if isinstance(table, pl.DataFrame):
                _write(table, out / "_tables" / f"{name}.parquet")
        if trace.unparsed_lines is not None:
            _write(trace.unparsed_lines, out / "_tables" / "unparsed_lines.parquet")
        ks = trace.kallsyms
        if ks is not None and len(ks):
            _write(pl.DataFrame({"addr": np.asarray(ks.addrs, np.uint64), "type": list(ks.types),
                                 "name": list(ks.names), "module": list(ks.modules)}, schema=_KALLSYMS_SCHEMA),
                   out / "_tables" / "kallsyms.parquet")
        md = trace.metadata
        summary = {"path": trace.source, "format": trace.format, "version": md.get("version"),
                   "compression": md.get("compression"), "uname": md.get("uname"), "clock": md.get("clock"),
                   "cpus": md.get("cpus"), "first_ts": lo, "last_ts": hi,
                   "duration_s": (hi - lo) / 1e9 if lo is not None and hi is not None else None,
                   "events": sum(counts.values()), "lost_events": trace.lost_total,
                   "damage": [str(d) for d in trace.damage] + skipped,
                   "lost_per_cpu": trace.lost_events.to_dicts()}
        (out / "metadata.json").write_text(json.dumps(summary, indent=2, default=str))
        (out / MANIFEST).write_text(json.dumps(_manifest(trace, files, counts, skipped), indent=1))
    except OSError as exc:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise ConfigError(f"{out}: cannot write the dataset: {exc.strerror or exc}") from exc
    except TracekitError:
        if created:  # a streamed input that fails part-way leaves no half dataset behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    return out
