"""Classify every line of a text trace at once (Polars string expressions over the whole column, cheapest tests
first): event lines, stack frames, headers, lost-event marks, and lines that match nothing."""

from __future__ import annotations

import numpy as np
import polars as pl

#: mail / bug-tracker quoting: ``> ``, ``>> ``, ``> > `` before the trace text
QUOTE = r"^(?:[ \t]*>)+[ \t]?"

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
    """Remove mail quote prefixes (``>`` at the start of a line or after one blank), only when some line has one."""
    line = pl.col("line")
    if not lines.select((line.str.starts_with(">") | line.str.starts_with(" >")).any()).item():
        return lines
    return lines.with_columns(line.str.replace(QUOTE, ""))


def metadata(others: pl.DataFrame) -> dict[str, object]:
    """What the header lines (among the lines that are neither events nor stack frames) say: cpus (``cpus=N`` or
    ``#P:N``), trace-cmd ``version``, ``tracer``, entries, and the CPUs reported empty."""
    md: dict[str, object] = {}
    head = others.filter(pl.col("line").str.contains(r"^\s*(?:#|cpus|version|CPU\s+\d+\s+is empty)"))["line"]
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


#: the part before the first ": " of an event line
HEAD = (r"^\s*(?:(?P<comm>\S.*?)-(?P<pid>\d+)\s+(?:\(\s*(?P<tgid>\d+|-+)\)\s+)?\[(?P<cpu>\d+)\]\s*"
        r"(?:(?P<flags>[.A-Za-z0-9]{4,5})\s+)?)?(?P<ts>\d+\.\d+|\d+)$")
_NAME = r"^[A-Za-z_][\w.+-]*$"


def classify(lines: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Split the lines by kind, cheapest tests first (most lines of a stack-heavy trace are frames).

    Returns:
        events: ``line_no, line, comm, pid, tgid, cpu, flags, ts, event, info`` (``event`` normalised:
            ``<stack trace>`` → ``kernel_stack``, the function tracer's ``func <-parent`` → ``function``),
        stacks: ``line_no, frame`` of `` => …`` lines,
        others: ``line_no, line, kind`` (``lost``, ``ignored``, ``unparsed``).
    """
    line = pl.col("line")
    # trace-cmd prints "=> sym (addr)", tracefs " => sym"; other indentations are caught among the leftovers below
    df = lines.with_columns((line.str.starts_with("=>") | line.str.starts_with(" =>")).alias("_stack"),
                            (line.str.starts_with("#") | (line == "")).alias("_hash"))
    stacks = df.filter(pl.col("_stack")).select("line_no", "line")
    cand = df.filter(~pl.col("_stack") & ~pl.col("_hash")).drop("_stack", "_hash")
    parts = cand.with_columns(pl.col("line").str.splitn(": ", 3).alias("_p")).unnest("_p")
    head = pl.col("field_0").str.extract_groups(HEAD)
    name = pl.col("field_1").str.strip_chars()
    parts = parts.with_columns(head.alias("_h"), name.str.strip_suffix(":").alias("_n")).unnest("_h")
    is_name = pl.col("_n").str.contains(_NAME)
    special = pl.col("_n").is_in(["<stack trace>", "<user stack trace>"])
    func = pl.col("_n").str.contains(r"\s<-")
    ok = pl.col("ts").is_not_null() & (is_name | special | func)
    event = (pl.when(special & (pl.col("_n") == "<stack trace>")).then(pl.lit("kernel_stack"))
             .when(special).then(pl.lit("user_stack"))
             .when(func).then(pl.lit("function"))
             .otherwise(pl.col("_n")))
    info = (pl.when(func).then(pl.col("_n")).when(special).then(pl.lit(""))
            .otherwise(pl.col("field_2").str.strip_chars().fill_null("")))
    parts = parts.with_columns(ok.alias("_ok"))
    events = parts.filter(pl.col("_ok")).select(
        "line_no", "line", "comm", "pid", "tgid", "cpu", "flags", "ts", event.alias("event"), info.alias("info"))
    rest = pl.concat([parts.filter(~pl.col("_ok")).select("line_no", "line"),
                      df.filter(pl.col("_hash")).select("line_no", "line")]).sort("line_no")
    odd_stack = rest["line"].str.contains(r"^\s*=>")
    if odd_stack.any():
        stacks = pl.concat([stacks, rest.filter(odd_stack)]).sort("line_no")
        rest = rest.filter(~odd_stack)
    kind = (pl.when(pl.col("line").str.contains(LOST)).then(pl.lit("lost"))
            .when(pl.col("line").str.contains(IGNORED)).then(pl.lit("ignored"))
            .otherwise(pl.lit("unparsed")))
    others = rest.with_columns(kind.alias("kind"))
    return events, stacks, others


def lost_events(others: pl.DataFrame) -> pl.DataFrame:
    """Lost-event marks per CPU as :data:`tracekit.model.LOST_SCHEMA` (a mark without a count is ``lost_unknown``)."""
    marks = others.filter(pl.col("kind") == "lost").select(
        pl.col("line").str.extract(LOST, 1).cast(pl.Int32).alias("cpu"),
        pl.col("line").str.extract(LOST, 2).cast(pl.Int64).alias("n"))
    return (marks.group_by("cpu", maintain_order=True)
            .agg(pl.col("n").sum().alias("lost"), pl.col("n").is_null().sum().cast(pl.Int64).alias("lost_unknown"))
            .sort("cpu"))


def attach_stacks(events: pl.DataFrame, stacks: pl.DataFrame, stack_events: tuple[str, ...]
                  ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Give each stack frame line (``line_no``, ``line``) to the event line above it.

    Returns:
        (frames per owning event line: ``owner`` line_no, ``callers`` List[String], ``caller`` List[UInt64]),
        and the frame lines whose owner is not a stack event (they go to ``unparsed_lines``).
    """
    ev_no = events["line_no"].to_numpy()
    st_no = stacks["line_no"].to_numpy()
    at = np.searchsorted(ev_no, st_no) - 1
    has_owner = at >= 0
    safe = np.where(has_owner, at, 0)
    if len(ev_no):
        is_stack = events["event"].is_in(list(stack_events)).to_numpy()
        ok, owner = has_owner & is_stack[safe], ev_no[safe]
    else:
        ok, owner = np.zeros(len(st_no), dtype=bool), np.zeros(len(st_no), dtype=np.uint32)
    # frame lines are in line order, so their owners are sorted: the group_by below takes its sorted fast path
    st = stacks.with_columns(pl.Series("owner", owner, dtype=pl.UInt32), pl.Series("_ok", ok, dtype=pl.Boolean))
    orphans = st.filter(~pl.col("_ok")).select("line_no", "line")
    st = st.filter(pl.col("_ok")).select("owner", "line")
    line = pl.col("line")
    if st.height and st["line"].str.ends_with(">").any():
        # tracefs with options/sym-addr: "sym <addr>" → the trace-cmd form
        angle = line.str.ends_with(">")
        st = st.with_columns(
            pl.when(angle).then(line.str.replace(_FRAME_ADDR, "").str.strip_chars_end() + " ("
                                + line.str.extract(_FRAME_ADDR, 1) + ")").otherwise(line).alias("line"))
    if st.height and st.select(line.str.starts_with("=> ").all()).item():
        rest = line.str.slice(3)                    # trace-cmd: every frame line starts "=> "
    else:
        rest = line.str.slice(line.str.find("=>", literal=True) + 3)
    # "sym (addr)": one split at the first " (" instead of find + two slices, each piece computed once
    st = st.select(pl.col("owner").set_sorted(), line.str.ends_with(")").alias("_end"),
                   rest.str.splitn(" (", 2).alias("_p")).unnest("_p")
    head, tail = pl.col("field_0"), pl.col("field_1")
    paren = pl.col("_end") & tail.is_not_null()
    sym = pl.when(paren | tail.is_null()).then(head).otherwise(head + " (" + tail)
    st = st.select("owner", pl.when(paren).then(tail.str.strip_suffix(")")).alias("_addr"), sym.alias("_sym"))
    st = st.select("owner", pl.when(pl.col("_sym").str.starts_with("0x") | (pl.col("_sym") == "")).then(None)
                   .otherwise(pl.col("_sym")).alias("callers"),
                   pl.col("_addr").str.to_integer(base=16, dtype=pl.UInt64, strict=False).alias("caller"))
    frames = st.group_by("owner", maintain_order=True).agg(
        pl.col("callers"), pl.col("caller"), pl.col("caller").is_not_null().all().alias("_has_addr"))
    frames = (frames.with_columns(pl.when(pl.col("_has_addr")).then(pl.col("caller")).alias("caller"))
              .select("owner", "callers", "caller"))
    return frames, orphans
