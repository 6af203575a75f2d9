"""Classify every line of a text trace at once (Polars regex over the whole column): event lines, stack frames,
headers, lost-event marks, and lines that match nothing."""

from __future__ import annotations

import polars as pl

#: mail / bug-tracker quoting: ``> ``, ``>> ``, ``> > `` before the trace text
QUOTE = r"^(?:[ \t]*>)+[ \t]?"

#: an event line: ``comm-pid [cpu] flags ts: event: info`` (tracefs; ``(tgid)`` with record-tgid; flags optional),
#: ``comm-pid [cpu] ts: event: info`` (trace-cmd report), or a bare ``ts: event: info``; the function tracer's
#: ``ts: func <-parent`` has no event name
EVENT = (r"^\s*(?:(?P<comm>\S.*?)-(?P<pid>\d+)\s+(?:\(\s*(?P<tgid>\d+|-+)\)\s+)?\[(?P<cpu>\d+)\]\s+"
         r"(?:(?P<flags>[.A-Za-z0-9]{4,5})\s+)?)?(?P<ts>\d+\.\d+|\d+):\s+"
         r"(?:(?P<special><stack trace>|<user stack trace>)|(?P<event>[A-Za-z_][\w.+-]*):(?:\s+|$)(?P<info>.*?)"
         r"|(?P<func>[A-Za-z_.$][\w.$]*)\s+<-(?P<parent>\S*))\s*$")

#: a stack frame line: tracefs `` => sym`` (`` => sym <addr>`` with sym-addr), trace-cmd ``=> sym (addr)``
STACK = r"^\s*=>\s*(?P<frame>.*?)\s*$"
_FRAME_ADDR = r"(?:^|\s)[(<](?:0x)?(?P<addr>[0-9a-fA-F]{4,16})[)>]$"

#: ``CPU:3 [LOST 120 EVENTS]`` (tracefs), ``CPU:3 [120 EVENTS DROPPED]`` / ``CPU:3 [EVENTS DROPPED]`` (trace-cmd)
LOST = r"^\s*CPU:\s*(?P<cpu>\d+)\s+\[(?:LOST\s+)?(?P<n>\d+)?\s*EVENTS(?:\s+DROPPED)?\]\s*$"

#: header / comment lines that carry no event
IGNORED = (r"^\s*$|^\s*#|^\s*cpus\s*=\s*\d+\s*$|^\s*version\s*=\s*\d+\s*$|^\s*CPU\s+\d+\s+is empty\s*$"
           r"|^\s*trace-cmd\s+version|^\s*\[\s*LOST|^\s*\.\.\.\s*$")

_META = {
    "cpus": (r"^\s*cpus\s*=\s*(\d+)\s*$", int),
    "cpus_hdr": (r"^#.*#P:(\d+)", int),
    "version": (r"^\s*version\s*=\s*(\d+)\s*$", int),
    "tracer": (r"^#\s*tracer:\s*(\S+)", str),
    "entries": (r"^#\s*entries-in-buffer/entries-written:\s*(\d+/\d+)", str),
}


def strip_quotes(lines: pl.DataFrame) -> pl.DataFrame:
    """Remove mail quote prefixes (only when some line carries one, to keep the common case cheap)."""
    if lines.height and lines["line"].str.contains(r"^[ \t]*>").any():
        return lines.with_columns(pl.col("line").str.replace(QUOTE, ""))
    return lines


def metadata(lines: pl.DataFrame) -> dict[str, object]:
    """What the header lines say: cpus (``cpus=N`` or ``#P:N``), trace-cmd ``version``, ``tracer``, entries, and the
    CPUs reported empty."""
    md: dict[str, object] = {}
    head = lines.filter(pl.col("line").str.contains(r"^\s*(?:#|cpus|version|CPU\s+\d+\s+is empty)"))["line"]
    for key, (rx, conv) in _META.items():
        hit = head.str.extract(rx, 1).drop_nulls()
        if hit.len():
            md[key] = conv(hit[0])
    if "cpus_hdr" in md:
        md.setdefault("cpus", md.pop("cpus_hdr"))
    empty = head.str.extract(r"^\s*CPU\s+(\d+)\s+is empty", 1).drop_nulls()
    if empty.len():
        md["empty_cpus"] = sorted(int(c) for c in empty)
    return md


def classify(lines: pl.DataFrame) -> pl.DataFrame:
    """Add a ``kind`` column (``event``, ``stack``, ``lost``, ``ignored``, ``unparsed``) and the captured parts of
    event lines (``comm pid tgid cpu flags ts event info``) and stack lines (``frame``)."""
    ev = pl.col("line").str.extract_groups(EVENT)
    df = lines.with_columns(ev.alias("_e"), pl.col("line").str.extract(STACK, 1).alias("frame"),
                            pl.col("line").str.contains(LOST).alias("_lost"),
                            pl.col("line").str.contains(IGNORED).alias("_ign")).unnest("_e")
    kind = (pl.when(pl.col("ts").is_not_null()).then(pl.lit("event"))
            .when(pl.col("frame").is_not_null()).then(pl.lit("stack"))
            .when(pl.col("_lost")).then(pl.lit("lost"))
            .when(pl.col("_ign")).then(pl.lit("ignored"))
            .otherwise(pl.lit("unparsed")))
    return df.with_columns(kind.alias("kind")).drop("_lost", "_ign")


def lost_events(df: pl.DataFrame) -> pl.DataFrame:
    """Lost-event marks per CPU as :data:`tracekit.model.LOST_SCHEMA` (a mark without a count is ``lost_unknown``)."""
    marks = df.filter(pl.col("kind") == "lost").select(
        pl.col("line").str.extract(LOST, 1).cast(pl.Int32).alias("cpu"),
        pl.col("line").str.extract(LOST, 2).cast(pl.Int64).alias("n"))
    return (marks.group_by("cpu", maintain_order=True)
            .agg(pl.col("n").sum().alias("lost"), pl.col("n").is_null().sum().cast(pl.Int64).alias("lost_unknown"))
            .sort("cpu"))


def attach_stacks(df: pl.DataFrame, stack_events: tuple[str, ...]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Give each stack frame line to the event line above it.

    Returns:
        (frames per owning event line: ``owner`` line_no, ``callers`` List[String], ``caller`` List[UInt64]),
        and the frame lines whose owner is not a stack event (they go to ``unparsed_lines``).
    """
    owner = pl.when(pl.col("kind") == "event").then(pl.col("line_no")).forward_fill()
    owner_event = pl.when(pl.col("kind") == "event").then(pl.col("event")).forward_fill()
    st = (df.select(pl.col("line_no"), pl.col("line"), pl.col("kind"), pl.col("frame"),
                    owner.alias("owner"), owner_event.alias("owner_event"))
          .filter(pl.col("kind") == "stack"))
    ok = pl.col("owner_event").is_in(list(stack_events))
    orphans = st.filter(~ok | pl.col("owner").is_null()).select("line_no", "line")
    st = st.filter(ok & pl.col("owner").is_not_null())
    addr = pl.col("frame").str.extract(_FRAME_ADDR, 1)
    sym = pl.col("frame").str.replace(_FRAME_ADDR, "").str.strip_chars()
    st = st.with_columns(
        pl.when(sym.str.contains(r"^(?:0x)?[0-9a-fA-F]{8,16}$|^$")).then(None).otherwise(sym).alias("callers"),
        addr.str.to_integer(base=16, dtype=pl.UInt64, strict=False).alias("caller"),
        addr.is_not_null().alias("_has_addr"))
    frames = st.group_by("owner", maintain_order=True).agg(
        pl.col("callers"), pl.col("caller"), pl.col("_has_addr").all().alias("_has_addr"))
    frames = frames.with_columns(pl.when(pl.col("_has_addr")).then(pl.col("caller")).alias("caller")).drop("_has_addr")
    return frames, orphans
