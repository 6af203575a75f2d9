"""The in-memory model every parser produces and every detector reads: :class:`Trace`.

A Trace is a set of Polars frames, one per event, plus what the input says about itself (``metadata``), the event
formats, lost events, and the damage met while reading. Common columns: ``ts`` (Int64 ns), ``cpu``, then for ftrace
events ``common_pid``, ``common_flags``, ``common_preempt_count``, ``common_comm`` and the event's own fields; for
perf samples ``pid``, ``tid``, ``comm``, ``period``, ``ip``, ``sym``, ``dso``, ``callchain``, ``callchain_ip``.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from .errors import MissingEventError, ParseError
from .formats import EventFormat
from .symbols import Kallsyms

__all__ = ["Trace", "TS", "CPU", "LOST_SCHEMA", "LOST_MARKS_SCHEMA", "empty_lost"]

TS = "ts"
CPU = "cpu"

LOST_SCHEMA = {"cpu": pl.Int32, "lost": pl.Int64, "lost_unknown": pl.Int64}
"""``Trace.lost_events``: per CPU, events the ring buffer (or perf) reported lost with a count (``lost``) and the
number of places that said "events were lost here" without a count (``lost_unknown``). Files with several buffers
add a ``buffer`` column.

A reader that knows WHERE events were lost (trace.dat: the page whose ``commit`` has the missed-events flag) also
gives ``Trace.tables["lost_marks"]`` with :data:`LOST_MARKS_SCHEMA`, one row per such place; the KVM detectors use it
to mark only the VM-exit windows that overlap a loss as inconclusive (without it, every window on that CPU is)."""

LOST_MARKS_SCHEMA = {"cpu": pl.Int32, "ts": pl.Int64, "prev_ts": pl.Int64, "lost": pl.Int64,
                     "lost_unknown": pl.Int64}
"""``Trace.tables["lost_marks"]``: per flagged page, its CPU, ``ts`` of its first event, ``prev_ts`` of the last
event before it on that CPU (null if none), ``lost`` (count, 0 when not stored) and ``lost_unknown`` (1 when the
count was not stored). Files with several buffers add a ``buffer`` column."""


def empty_lost() -> pl.DataFrame:
    return pl.DataFrame(schema=LOST_SCHEMA)


FrameSource = pl.DataFrame | Callable[[], pl.DataFrame]


@dataclass(eq=False)
class Trace:
    """Events of one input, as Polars frames.

    Attributes:
        source: the path read.
        format: the input format (``trace.dat``, ``ftrace-text``, ``perf.data``, ``perf-script``, …).
        metadata: what the input says about itself (version, clock, uname, cpus, options …).
        formats: event formats by ``system:event`` (empty for perf samples without tracepoints).
        lost_events: see :data:`LOST_SCHEMA`.
        kallsyms: the kernel symbol table carried by the input, if any.
        damage: errors met and survived while reading (a corrupt page is skipped, recorded here).
        unparsed_lines: for text inputs, a frame (``line_no``, ``line``) of lines that matched no form.
        tables: other tables of the input (perf: ``comm``, ``mmap``, ``lost``, ``throttle`` …).
    """

    source: str
    format: str
    frames: Mapping[str, FrameSource]
    metadata: dict[str, Any] = field(default_factory=dict)
    formats: dict[str, EventFormat] = field(default_factory=dict)
    lost_events: pl.DataFrame = field(default_factory=empty_lost)
    kallsyms: Kallsyms | None = None
    damage: list[ParseError] = field(default_factory=list)
    unparsed_lines: pl.DataFrame | None = None
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    counts_hint: dict[str, int] | None = None
    short_names: bool = True

    def __post_init__(self) -> None:
        self._cache: dict[str, pl.DataFrame] = {}
        keys = list(self.frames)
        short = [k.rsplit(":", 1)[-1] for k in keys]
        self._names: dict[str, str] = {}
        for k, s in zip(keys, short, strict=True):
            unique = short.count(s) == 1
            self._names[s if (self.short_names and unique) else k] = k

    # -- names -------------------------------------------------------------------------------------------------
    @property
    def event_names(self) -> list[str]:
        """Names of the events present, as ``events()`` accepts them (the short name unless it is ambiguous)."""
        return list(self._names)

    def _key(self, name: str) -> str:
        if name in self.frames:
            return name
        if name in self._names:
            return self._names[name]
        short = name.rsplit(":", 1)[-1]
        hits = [k for k in self.frames if k.rsplit(":", 1)[-1] == short and (":" not in name or k.endswith(name))]
        if len(hits) == 1:
            return hits[0]
        raise MissingEventError(name, self.event_names)

    def has(self, name: str) -> bool:
        """True when the trace holds event ``name`` (``event`` or ``system:event``)."""
        try:
            self._key(name)
        except MissingEventError:
            return False
        return True

    def format_of(self, name: str) -> EventFormat | None:
        """The format of event ``name``, when known."""
        key = self._key(name)
        return self.formats.get(key)

    # -- frames ------------------------------------------------------------------------------------------------
    def events(self, name: str, *, symbolic: bool = False) -> pl.DataFrame:
        """The frame of one event, rows in time order.

        Args:
            name: ``event`` or ``system:event``.
            symbolic: add a String column ``<field>_name`` for every field a ``__print_symbolic`` /
                ``__print_flags`` of the event's print fmt applies to.

        Raises:
            MissingEventError: the trace does not hold the event (the closest names present are listed).
        """
        key = self._key(name)
        df = self._cache.get(key)
        if df is None:
            src = self.frames[key]
            df = src() if callable(src) else src
            self._cache[key] = df
        if symbolic:
            fmt = self.formats.get(key)
            if fmt is not None:
                from .printfmt import symbolic_columns

                df = symbolic_columns(self, fmt, df)
        return df

    def scan(self, name: str) -> pl.LazyFrame:
        """The event as a LazyFrame: from a reader that keeps events on disk (a converted Parquet dataset) a scan
        that pushes column selection and filters down to the files, else the frame (read once, cached) made lazy.

        Raises:
            MissingEventError: the trace does not hold the event.
        """
        key = self._key(name)
        lazy = getattr(self.frames[key], "lazy_scan", None)
        if key not in self._cache and callable(lazy):
            return lazy()
        return self.events(key).lazy()

    def counts(self) -> pl.DataFrame:
        """Events per name: columns ``event`` (String) and ``count`` (Int64), most frequent first."""
        rows = []
        for short, key in self._names.items():
            if self.counts_hint is not None and key in self.counts_hint:
                n = self.counts_hint[key]
            else:
                n = self.events(key).height
            rows.append((short, n))
        return (pl.DataFrame(rows, schema={"event": pl.String, "count": pl.Int64}, orient="row")
                .sort(["count", "event"], descending=[True, False]))

    @property
    def total_events(self) -> int:
        return int(self.counts()["count"].sum())

    @property
    def lost_total(self) -> int:
        """Every lost-event count plus every place that reported an unknown number lost."""
        if self.lost_events.is_empty():
            return 0
        cols = [c for c in ("lost", "lost_unknown") if c in self.lost_events.columns]
        return int(self.lost_events.select(pl.sum_horizontal(cols).sum()).item() or 0)

    def time_range(self) -> tuple[int | None, int | None]:
        """(first, last) timestamp in ns over all events, or (None, None) for an empty trace."""
        lo = hi = None
        for key in self._names.values():
            df = self.events(key)
            if df.height and TS in df.columns:
                a, b = df[TS].min(), df[TS].max()
                lo = a if lo is None else min(lo, a)
                hi = b if hi is None else max(hi, b)
        return lo, hi

    def render(self) -> pl.DataFrame:
        """Every event as text: columns ``ts, cpu, common_pid, common_comm, event, info`` in trace order, ``info``
        being what libtraceevent prints for the event without plugins (``trace-cmd report -N``)."""
        from .printfmt import render_trace

        return render_trace(self)

    # -- display -----------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The facts ``tracekit info`` prints, as a dict."""
        lo, hi = self.time_range()
        md = self.metadata
        return {
            "path": self.source,
            "format": self.format,
            "version": md.get("version"),
            "compression": md.get("compression"),
            "uname": md.get("uname"),
            "clock": md.get("clock"),
            "cpus": md.get("cpus"),
            "first_ts": lo,
            "last_ts": hi,
            "duration_s": (hi - lo) / 1e9 if lo is not None and hi is not None else None,
            "events": self.total_events,
            "lost_events": self.lost_total,
            "damage": [str(d) for d in self.damage],
        }

    def __repr__(self) -> str:
        return f"<Trace {self.format} {self.source!r}: {len(self._names)} event types>"

    def _repr_html_(self) -> str:
        s = self.summary()
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in s.items() if k != "damage")
        counts = "".join(f"<tr><td>{html.escape(e)}</td><td>{n}</td></tr>"
                         for e, n in self.counts().head(20).iter_rows())
        return (f"<table>{rows}</table><table><tr><th>event</th><th>count</th></tr>{counts}</table>")
