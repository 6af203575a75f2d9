"""``perf script`` text reader (perf 6.x output): the default fields and ``-F`` selections, with or without
callchains, several events, ``# captured on`` header blocks (``--header``), ``[unknown]`` frames, tracepoint samples
and comms with spaces.

The text is parsed column-wise with Polars regular expressions over all lines at once: a sample line is
``[comm] [pid/]tid [[cpu]] time: [period] event: [rest]``; callchain frames are the indented
``addr sym[+off] (dso)`` lines that follow it, until a blank line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import polars as pl
import zstandard

from tracekit.errors import ParseError, UnsupportedFormatError
from tracekit.model import LOST_SCHEMA, Trace

__all__ = ["sniff", "read"]

_SAMPLE = (r"^\s*(?:(?P<comm>.*?)\s+)??(?:(?P<pid>-?\d+)/)?(?P<tid>-?\d+)\s+(?:\[(?P<cpu>\d+)\]\s+)?"
           r"(?P<time>\d+\.\d+):\s+(?:(?P<period>\d+)\s+)?(?P<event>\S+?):(?:\s+(?P<rest>.*?))?\s*$")
_FRAME = r"^\s+(?P<addr>[0-9a-f]+)\s+(?P<sym>.*?)(?:\+(?P<off>0x[0-9a-f]+))?\s+\((?P<dso>.*)\)\s*$"
_IPSYM = (r"^(?:(?P<fields>.*?)\s+)?(?P<ip>[0-9a-f]{1,16})\s+(?P<sym>.*?)(?:\+(?P<off>0x[0-9a-f]+))?"
          r"\s+\((?P<dso>[^()]*)\)$|^(?P<ip_only>[0-9a-f]{1,16})$")
_LOST = (r"^\s*(?:(?P<comm>.*?)\s+)??(?:(?P<pid>-?\d+)/)?(?P<tid>-?\d+)\s+(?:\[(?P<cpu>\d+)\]\s+)?"
         r"(?:(?P<time>\d+\.\d+):\s+)?PERF_RECORD_LOST lost (?P<lost>\d+)\s*$")
_SAMPLE_RE = re.compile(_SAMPLE)
_MAX_BYTES = 8 << 30

#: columns of every perf-script frame (tracepoint fields, when present, follow as ``fields`` text)
SCHEMA = {
    "ts": pl.Int64, "cpu": pl.Int32, "pid": pl.Int32, "tid": pl.Int32, "comm": pl.String, "period": pl.UInt64,
    "ip": pl.UInt64, "sym": pl.String, "dso": pl.String, "callchain": pl.List(pl.String),
    "callchain_ip": pl.List(pl.UInt64),
}


def sniff(head: bytes) -> bool:
    """True when ``head`` looks like ``perf script`` output: a ``# captured on`` header or sample lines."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head[:-8].decode("utf-8", "ignore")
    if "\0" in text:
        return False
    if text.lstrip().startswith("# ========\n# captured on"):
        return True
    lines = [ln for ln in text.splitlines()[:40] if ln.strip() and not ln.startswith("#")]
    if not lines:
        return False
    hits = sum(1 for ln in lines if _SAMPLE_RE.match(ln) or re.match(_FRAME, ln))
    return hits >= max(1, len(lines) * 3 // 4) and any(_SAMPLE_RE.match(ln) for ln in lines)


def _text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ParseError(path, None, "a readable file", exc.strerror) from exc
    if data.startswith(b"\x28\xb5\x2f\xfd"):
        try:
            with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as r:
                data = r.read(_MAX_BYTES)
        except zstandard.ZstdError as exc:
            raise ParseError(path, 0, "a zstd-compressed perf script text", str(exc)) from exc
    if b"\0" in data:
        raise ParseError(path, data.index(b"\0"), "perf script text", "a NUL byte (binary data)")
    return data.decode("utf-8", "replace")


def _header(lines: pl.Series) -> dict:
    """``# key : value`` lines of a ``perf script --header`` block as metadata."""
    md: dict = {}
    for line in lines.to_list():
        m = re.match(r"^#\s*([^:]+?)\s*:\s(.*)$", line)
        if m:
            key = m.group(1).strip().replace(" ", "_")
            val = m.group(2).strip()
            if key == "event":
                md.setdefault("event_desc", []).append(val)
            elif key == "cmdline":
                md["cmdline"] = val.split()
            else:
                md.setdefault(key, val)
    return md


def _ts(col: str) -> pl.Expr:
    sec = pl.col(col).str.extract(r"^(\d+)\.").cast(pl.Int64)
    frac = pl.col(col).str.extract(r"\.(\d+)$").str.pad_end(9, "0").str.slice(0, 9).cast(pl.Int64)
    return sec * 1_000_000_000 + frac


def read(path: str | os.PathLike, *, progress: Callable[[int, int], None] | None = None, **options) -> Trace:
    """Read ``perf script`` output into a :class:`~tracekit.Trace` (``format="perf-script"``).

    Args:
        path: the text file (plain or zstd-compressed).
        progress: called as ``progress(done, total)``.

    Returns:
        One frame per event with ``ts, cpu, pid, tid, comm, period, ip, sym, dso, callchain, callchain_ip`` (null
        where the text lacks the field), ``fields`` for tracepoint text; ``PERF_RECORD_LOST`` lines
        (``--show-lost-events``) in ``tables["lost"]`` and ``lost_events``; unmatched lines in ``unparsed_lines``.

    Raises:
        ParseError: the file is unreadable or binary. UnsupportedFormatError: no sample line at all.
    """
    p = Path(path)
    text = _text(p)
    lines = pl.Series("line", text.split("\n"))
    if lines.len() and lines[-1] == "":
        lines = lines.head(lines.len() - 1)
    df = pl.DataFrame({"line": lines}).with_row_index("line_no")
    is_comment = pl.col("line").str.starts_with("#")
    is_blank = pl.col("line").str.strip_chars() == ""
    frame = pl.col("line").str.contains(r"^\t\s*[0-9a-f]+\s.*\)\s*$")
    df = df.with_columns(kind=pl.when(is_comment).then(pl.lit("c")).when(is_blank).then(pl.lit("b"))
                         .when(frame).then(pl.lit("f"))
                         .when(pl.col("line").str.contains("PERF_RECORD_LOST lost")).then(pl.lit("l"))
                         .when(pl.col("line").str.contains(_SAMPLE)).then(pl.lit("s")).otherwise(pl.lit("u")))
    md = _header(df.filter(pl.col("kind") == "c")["line"])
    df = df.with_columns(sample=(pl.col("kind") == "s").cum_sum() - 1)
    samples = df.filter(pl.col("kind") == "s")
    if samples.is_empty():
        raise UnsupportedFormatError(p, "no perf script sample line ('comm tid [cpu] time: period event:')", 0)
    if progress:
        progress(1, 2)
    s = samples.select("sample", pl.col("line").str.extract_groups(_SAMPLE).alias("g")).unnest("g")
    rest = pl.col("rest").fill_null("").str.strip_chars()
    ipsym = rest.str.extract_groups(_IPSYM)
    s = s.with_columns(
        _ts("time").alias("ts"),
        pl.col("cpu").cast(pl.Int32),
        pl.col("pid").cast(pl.Int32),
        pl.col("tid").cast(pl.Int32),
        pl.col("comm").str.strip_chars(),
        pl.col("period").cast(pl.UInt64),
        ipsym.alias("ipsym"),
    ).unnest("ipsym")
    s = s.with_columns(pl.coalesce("ip", "ip_only").str.to_integer(base=16, dtype=pl.UInt64, strict=False)
                       .alias("ip"),
                       pl.when(pl.col("ip").is_null() & pl.col("ip_only").is_null() & (rest != ""))
                       .then(rest).otherwise(pl.col("fields")).alias("fields"))
    # callchains: frames belong to the sample line above them
    fr = (df.filter((pl.col("kind") == "f") & (pl.col("sample") >= 0))
          .select("sample", pl.col("line").str.extract_groups(_FRAME).alias("g")).unnest("g")
          .with_columns(pl.col("addr").str.to_integer(base=16, dtype=pl.UInt64, strict=False)))
    chains = fr.group_by("sample", maintain_order=True).agg(callchain=pl.col("sym"), callchain_ip=pl.col("addr"))
    s = s.join(chains, on="sample", how="left", maintain_order="left")
    has_frames = fr.height > 0
    # with callchains the sample line carries no ip: take the leaf frame's
    if has_frames:
        leaf = fr.group_by("sample", maintain_order=True).first().select(
            "sample", pl.col("addr").alias("_lip"), pl.col("sym").alias("_lsym"), pl.col("dso").alias("_ldso"))
        s = s.join(leaf, on="sample", how="left", maintain_order="left").with_columns(
            pl.coalesce("ip", "_lip").alias("ip"), pl.coalesce("sym", "_lsym").alias("sym"),
            pl.coalesce("dso", "_ldso").alias("dso")).drop("_lip", "_lsym", "_ldso")
    s = s.with_columns(pl.col("callchain").fill_null([]), pl.col("callchain_ip").fill_null([])) \
        if "callchain" in s.columns else s
    frames: dict[str, pl.DataFrame] = {}
    for (event,), part in s.group_by("event", maintain_order=True):
        out = part.select([pl.col(c).cast(t) if c in part.columns else pl.lit(None, dtype=t).alias(c)
                           for c, t in SCHEMA.items()])
        if part["fields"].null_count() < part.height:
            out = out.with_columns(part["fields"])
        frames[event] = out
    unparsed = df.filter(pl.col("kind") == "u").select("line_no", "line")
    tables: dict[str, pl.DataFrame] = {}
    lost_events = pl.DataFrame(schema=LOST_SCHEMA)
    lost_lines = df.filter(pl.col("kind") == "l")
    if lost_lines.height:  # perf script --show-lost-events
        lost = (lost_lines.select(pl.col("line").str.extract_groups(_LOST).alias("g")).unnest("g")
                .select(_ts("time").alias("ts"), pl.col("cpu").cast(pl.Int32), pl.col("tid").cast(pl.Int32),
                        pl.col("lost").cast(pl.Int64)))
        tables["lost"] = lost
        lost_events = (lost.group_by("cpu").agg(pl.col("lost").sum()).sort("cpu")
                       .with_columns(lost_unknown=pl.lit(0, dtype=pl.Int64)).select(list(LOST_SCHEMA)))
    md["samples"] = s.height
    if progress:
        progress(2, 2)
    return Trace(source=os.fspath(p), format="perf-script", frames=frames, metadata=md, tables=tables,
                 lost_events=lost_events, unparsed_lines=unparsed if unparsed.height else None, short_names=False)
