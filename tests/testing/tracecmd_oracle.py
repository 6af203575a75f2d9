"""Run ``trace-cmd report -R -t -N`` on a file and parse every event into (ts, cpu, pid, event, {field: value}),
with values turned back into numbers the way the writer took them (symbols through the file's kallsyms)."""

from __future__ import annotations

import bisect
import re
import shutil
import subprocess

import pytest

LINE = re.compile(r"^\s*(?P<comm>.*)-(?P<pid>-?\d+)\s+\[(?P<cpu>\d+)\]\s*(?P<ts>\d+)\.(?P<frac>\d{9}):\s+"
                  r"(?P<event>[^:\s]+):\s?(?P<rest>.*)$")
DROP = re.compile(r"CPU:(?P<cpu>\d+) \[(?:(?P<n>\d+) )?EVENTS DROPPED\]")


def tracecmd() -> str:
    """The trace-cmd binary, or skip the calling test with the reason."""
    exe = shutil.which("trace-cmd")
    if exe is None:
        pytest.skip("trace-cmd not installed: the writer's oracle is `trace-cmd report`")
    return exe


def report(path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tracecmd(), "report", *args, str(path)], capture_output=True, text=True, errors="replace",
                          timeout=300)


def _split(rest: str, names: list[str]) -> dict[str, str]:
    pos = [(m.start(), m.group(1)) for m in re.finditer(r"(?:^| )(" + "|".join(map(re.escape, names)) + r")=", rest)]
    out = {}
    for i, (start, name) in enumerate(pos):
        vstart = rest.index("=", start) + 1
        vend = pos[i + 1][0] if i + 1 < len(pos) else len(rest)
        out[name] = rest[vstart:vend]
    return out


def value(text: str, symbols: dict[str, int]):
    """A -R field value back to what was written: ints (decimal, 0x-hex, bare hex), symbols, ARRAY[bytes], text."""
    t = text.strip()
    if re.fullmatch(r"-?\d+", t):
        return int(t)
    if re.fullmatch(r"0x[0-9a-fA-F]+", t):
        return int(t, 16)
    if re.fullmatch(r"[0-9a-f]*[a-f][0-9a-f]*", t) and len(t) >= 8:
        return int(t, 16)
    m = re.fullmatch(r"ARRAY\[(.*)\]", t)
    if m:
        return bytes(int(b, 16) for b in m.group(1).split(", ") if b)
    m = re.fullmatch(r"([\w.]+)(?:\+0x([0-9a-f]+))?", t)
    if m and m.group(1) in symbols:
        return Symbol(m.group(1))
    return text


class Symbol(str):
    """A field trace-cmd printed as a kernel symbol (``%ps`` prints no offset)."""


_CONV = re.compile(r"%%|%[-+ #0]*\d*(?:\.\d+)?(?:hh|h|ll|l|L|z)?([diouxXsScp])")


def bare_hex_fields(print_fmt: str) -> set[str]:
    """Fields the print fmt shows as ``%x`` without a ``0x`` before it (trace-cmd -R prints them the same way)."""
    m = re.match(r'\s*"((?:[^"\\]|\\.)*)"\s*,?(.*)$', print_fmt, re.S)
    if not m:
        return set()
    fmt, rest = m.group(1), m.group(2)
    convs = [(c.group(1), fmt[max(0, c.start() - 2):c.start()]) for c in _CONV.finditer(fmt) if c.group(0) != "%%"]
    args, depth, cur = [], 0, ""
    for ch in rest:
        if ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
            continue
        depth += ch in "({"
        depth -= ch in ")}"
        cur += ch
    args.append(cur.strip())
    out = set()
    for (conv, before), arg in zip(convs, args, strict=False):
        a = re.fullmatch(r"REC->(\w+)", arg)
        if a and conv in "xX" and before != "0x":
            out.add(a.group(1))
    return out


def parse(text: str, formats, symbols: dict[str, int]):
    """Events and dropped-event marks of a ``trace-cmd report -R -t -N`` output.

    Returns:
        (events, drops): events as (ts, cpu, pid, event-name, fields dict); drops as [(cpu, count|None)].
    """
    by_name = {f.name: f for f in formats.values()}
    events, drops = [], []
    bare: dict[str, set[str]] = {}
    for line in text.splitlines():
        d = DROP.search(line)
        if d:
            drops.append((int(d["cpu"]), int(d["n"]) if d["n"] else None))
            continue
        m = LINE.match(line)
        if not m:
            continue
        fmt = by_name[m["event"]]
        names = [f.name for f in fmt.own_fields]
        sized = {f.name for f in fmt.own_fields if f.size}
        if fmt.name not in bare:
            bare[fmt.name] = bare_hex_fields(fmt.print_fmt)
        fields = {k: (int(v, 16) if k in bare[fmt.name] and re.fullmatch(r"[0-9a-f]+", v.strip()) else
                      value(v, symbols)) for k, v in _split(m["rest"], names).items() if k in sized}
        if fmt.name in ("kernel_stack", "user_stack") and isinstance(fields.get("caller"), bytes):
            fields["caller"] = fields["caller"][: 8 * min(8, int(fields.get("size", 8)))]
        events.append((int(m["ts"]) * 1_000_000_000 + int(m["frac"]), int(m["cpu"]), int(m["pid"]), m["event"],
                       fields))
    return events, drops


def expected(events, formats):
    """What trace-cmd should print for each written row: (ts, cpu, pid, name, {field: value})."""
    out = []
    for full, df in events.items():
        fmt = formats[full]
        for row in df.iter_rows(named=True):
            fields = {}
            for f in fmt.own_fields:
                if f.size == 0 or f.name not in row:
                    continue
                v = row[f.name]
                if isinstance(v, str):
                    fields[f.name] = v
                elif isinstance(v, list):
                    es = f.size // f.array_len
                    if fmt.name in ("kernel_stack", "user_stack"):  # -R shows 8 slots; only `size` are the record's
                        v = v[: f.array_len]
                        fields[f.name] = b"".join(int(x).to_bytes(es, "little") for x in v)
                        continue
                    fields[f.name] = b"".join(int(x).to_bytes(es, "little") for x in (v + [0] * f.array_len)[:f.array_len])
                else:
                    v = int(v)
                    bits = 8 * f.size
                    cast = re.search(r"\(u(8|16|32)\)REC->" + re.escape(f.name) + r"\b", fmt.print_fmt)
                    if cast:  # trace-cmd -R prints such a field through the print fmt's cast
                        bits = min(bits, int(cast.group(1)))
                    v &= (1 << bits) - 1
                    if f.signed and v >= 1 << (bits - 1):
                        v -= 1 << bits
                    fields[f.name] = v
            for f in fmt.own_fields:
                if f.size and f.name not in fields:
                    fields[f.name] = "" if f.is_string else 0
            out.append((row["ts"], row["cpu"], row["common_pid"], fmt.name, fields))
    return out


def norm(events, symbols: dict[str, int]):
    """Events as sorted tuples; addresses (ints or printed symbols) become the symbol that holds them."""
    addrs = sorted((a, n) for n, a in symbols.items())
    starts = [a for a, _ in addrs]
    lo = starts[0] if starts else 1 << 64

    def sym(v):
        if isinstance(v, Symbol):
            return ("sym", str(v))
        if isinstance(v, int) and v >= lo:
            return ("sym", addrs[bisect.bisect_right(starts, v) - 1][1])
        return v.rstrip() if isinstance(v, str) else v

    return sorted((ts, cpu, pid, name, tuple(sorted((k, sym(v)) for k, v in f.items())))
                  for ts, cpu, pid, name, f in events)
