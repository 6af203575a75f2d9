"""Reader of a Parquet dataset directory written by :func:`tracekit.stream.convert` (tracekit dataset version 1,
Apache Parquet 2.x files written by Polars; layout in ``tracekit/stream.py``).

``read`` opens only the small manifest and tables; each event is a :class:`polars.LazyFrame`
(``pl.scan_parquet``) until asked for. :func:`scan` (= ``Trace.scan``, which the KVM detectors use) gives that
LazyFrame, so a caller pushes column selection and filters down to the Parquet reader; ``Trace.events(name)``
collects the WHOLE event file (every column of that one event, nothing of the others) the first time it is asked for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl

from ..errors import ParseError, TracekitError
from ..formats import parse_format
from ..model import Trace
from ..stream import DATASET_VERSION, MANIFEST
from ..symbols import Kallsyms

__all__ = ["sniff", "read", "scan", "is_dataset"]


def sniff(head: bytes) -> bool:
    """Always False: a dataset is a directory, recognised by :func:`tracekit.api.detect_format`, not by bytes."""
    return False


def is_dataset(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory written by ``tracekit convert``."""
    return (Path(path) / MANIFEST).is_file()


def _scan(path: Path) -> pl.LazyFrame:
    """One event: a file, or a directory of part files read in name order (streamed conversion)."""
    if path.is_dir():
        return pl.scan_parquet(sorted(path.glob("*.parquet")))
    return pl.scan_parquet(path)


def _collector(path: Path, key: str):
    def build() -> pl.DataFrame:
        try:
            return _scan(path).collect()
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise ParseError(path, None, f"a readable Parquet file of event {key}", f"{type(exc).__name__}: {exc}") \
                from exc

    build.lazy_scan = lambda: _scan(path)  # Trace.scan: the event as a scan (column selection pushed down)
    return build


def scan(trace: Trace, name: str) -> pl.LazyFrame:
    """The LazyFrame of event ``name`` of a dataset Trace (or of any Trace: its frame, made lazy).

    Raises:
        MissingEventError: the trace does not hold the event.
    """
    return trace.scan(name)


def _table(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ParseError(path, None, "a readable Parquet table", f"{type(exc).__name__}: {exc}") from exc


def read(source: str | os.PathLike, *, progress=None, **_options) -> Trace:
    """Open a converted dataset directory.

    Args:
        source: the directory (``DIR/tracekit.json`` + ``DIR/<system>/<event>.parquet``).

    Returns:
        A Trace whose frames are read from Parquet on first use; ``metadata["parquet_files"]`` maps each event to
        its file (for :func:`scan`); ``format`` is ``parquet`` and ``metadata["source_format"]`` the original one.

    Raises:
        ParseError: the manifest is missing, unreadable or of another version.
    """
    d = Path(source)
    mpath = d / MANIFEST
    if not mpath.is_file():
        return _read_plain(d)
    try:
        man = json.loads(mpath.read_text())
    except OSError as exc:
        raise ParseError(mpath, None, "the manifest of a tracekit convert directory", exc.strerror or str(exc)) \
            from exc
    except ValueError as exc:
        raise ParseError(mpath, None, "JSON", str(exc)) from exc
    if not isinstance(man, dict) or man.get("dataset_version") != DATASET_VERSION:
        found = man.get("dataset_version") if isinstance(man, dict) else type(man).__name__
        raise ParseError(mpath, 0, f"dataset_version {DATASET_VERSION}", repr(found))
    damage: list[ParseError] = [ParseError(d, None, "an undamaged input", msg) for msg in man.get("damage", [])]
    formats = {}
    for key, f in man.get("formats", {}).items():
        try:
            formats[key] = parse_format(f["text"], f.get("system", ""), path=str(mpath))
        except TracekitError as exc:
            damage.append(exc if isinstance(exc, ParseError) else ParseError(mpath, None, "an event format",
                                                                               str(exc)))
    files = {key: d / name for key, name in man.get("events", {}).items()}
    missing = [k for k, p in files.items() if not (p.is_file() or p.is_dir())]
    for k in missing:
        damage.append(ParseError(files.pop(k), None, f"the Parquet file of event {k}", "missing"))
    tables = {p.stem: _table(p) for p in sorted((d / "_tables").glob("*.parquet"))}
    lost = tables.pop("lost_events", None)
    unparsed = tables.pop("unparsed_lines", None)
    ks_df = tables.pop("kallsyms", None)
    kallsyms = None
    if ks_df is not None and ks_df.height:
        kallsyms = Kallsyms(ks_df["addr"].to_numpy(), ks_df["name"].to_numpy(), ks_df["type"].to_numpy(),
                            ks_df["module"].to_numpy())
    md = dict(man.get("metadata", {}))
    md["printk_formats"] = {int(k): v for k, v in man.get("printk_formats", {}).items()}
    md["source_format"] = man.get("source_format")
    md["parquet_files"] = {k: str(p) for k, p in files.items()}
    kw = {"lost_events": lost} if lost is not None else {}
    return Trace(source=str(d), format="parquet", frames={k: _collector(p, k) for k, p in files.items()},
                 metadata=md, formats=formats, kallsyms=kallsyms, damage=damage, tables=tables,
                 unparsed_lines=unparsed, counts_hint={k: int(v) for k, v in man.get("counts", {}).items()
                                                       if k in files}, **kw)


def _read_plain(d: Path) -> Trace:
    """A directory of Parquet files without a manifest: ``DIR/<system>/<event>.parquet`` → ``system:event``,
    ``DIR/<event>.parquet`` → ``event``; no formats, lost events or kallsyms are known."""
    files = {f"{p.parent.name}:{p.stem}": p for p in sorted(d.glob("*/*.parquet"))}
    files.update({p.stem: p for p in sorted(d.glob("*.parquet"))})
    if not files:
        raise ParseError(d, None, "Parquet files (DIR/<system>/<event>.parquet)", "none")
    md = {"source_format": None, "parquet_files": {k: str(p) for k, p in files.items()}}
    return Trace(source=str(d), format="parquet", frames={k: _collector(p, k) for k, p in files.items()},
                 metadata=md)
