"""Run ``trace-cmd report -R -t -N`` on a file and parse every event into (ts, cpu, pid, event, {field: value}),
with values turned back into numbers the way the writer took them (symbols through the file's kallsyms)."""

from __future__ import annotations

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
        return symbols[m.group(1)] + int(m.group(2) or "0", 16)
    return text


def parse(text: str, formats, symbols: dict[str, int]):
    """Events and dropped-event marks of a ``trace-cmd report -R -t -N`` output.

    Returns:
        (events, drops): events as (ts, cpu, pid, event-name, fields dict); drops as [(cpu, count|None)].
    """
    by_name = {f.name: f for f in formats.values()}
    events, drops = [], []
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
        fields = {k: value(v, symbols) for k, v in _split(m["rest"], names).items()}
        events.append((int(m["ts"]) * 1_000_000_000 + int(m["frac"]), int(m["cpu"]), int(m["pid"]), m["event"],
                       fields))
    return events, drops
