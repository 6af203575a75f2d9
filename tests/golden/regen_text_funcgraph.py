"""Make function_graph tracer texts (trace-cmd report and tracefs forms) of one synthetic trace.dat.

This machine's kernel has no function_graph tracer (available_tracers: blk function nop), so the EVENTS are
synthetic: vCPU threads ``CPU n/KVM`` call ``kvm_pmu_handle_event → reprogram_counter → pmc_reprogram_counter.part.0
→ perf_event_ctx_lock → perf_event_ctx_lock_nested.isra.0 → __mutex_lock.constprop.0`` every 20 ms (then
``perf_event_ctx_unlock``); inside bursts (``BURST_S`` every ``PERIOD_S``) the mutex waits 5-12 ms (an optimistic
spin ``mutex_spin_on_owner`` then a sleep, after which a few threads wake on CPU 3), outside 2-20 µs. A ``perf``
thread on CPU 3 takes the same mutex through ``perf_ioctl`` every 100 ms, a kworker runs on CPU 0 now and then. The
events are written as ``ftrace:funcgraph_entry`` / ``funcgraph_exit`` (Linux 6.18 formats: entry ``ts`` = calltime,
exit ``ts`` = rettime) by ``tracekit.testing.write_tracedat``. Outputs in ``tests/data/text/funcgraph/``:

- ``graph.dat``: the trace.dat;
- ``report.txt.zst`` / ``report_t.txt.zst`` / ``report_tail.txt.zst``: what the REAL ``trace-cmd report`` (3.x;
  default, ``-t``, ``-O fgraph:tailprint -O fgraph:depth``) prints for it: trace-cmd's function-graph form
  (``lib/trace-cmd/trace-ftrace.c``); ``reportR_head.txt.zst`` / ``reportN_head.txt.zst``: the first
  ``HEAD_LINES`` lines of ``trace-cmd report -R`` / ``-N`` (one line per record, ``func=NAME depth=…`` and the
  events' own print fmt ``<-- NAME (depth) (start: …  end: …)``);
- ``tracefs.txt.zst`` / ``tracefs_noproc.txt.zst``: the kernel's tracefs layout of the function_graph tracer with
  ``funcgraph-abstime`` and ``funcgraph-proc`` on (and with ``funcgraph-proc`` off), DERIVED mechanically from
  ``report.txt`` line by line as ``kernel/trace/trace_functions_graph.c`` prints the same records
  (``print_graph_prologue``: ``%5lu.%06lu |  ``, `` %*d) ``, comm cut to 7 characters and centred in 14 with its
  pid, `` | ``; ``print_graph_duration``: ``trace_find_mark`` and ``trace_print_graph_duration``'s 7-digit
  precision; ``verif_pid``'s context-switch block when a CPU's task changes; the header of
  ``__print_graph_headers_flags``). The call part after the ``|`` is trace-cmd's, unchanged (the same indentation
  and ``func() {`` / ``func();`` / ``}``); the leaf merges and the µs rounding of the time column stay trace-cmd's.

Run: ``python tests/golden/regen_text_funcgraph.py`` (needs trace-cmd 3.x).
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import zstandard

from tracekit.testing import write_tracedat

OUT = Path(__file__).resolve().parents[1] / "data" / "text" / "funcgraph"
PERIOD_S, BURST_S, DURATION_S = 2.0, 0.6, 8.0
VCPUS = 3
HEAD_LINES = 3000
SYMS = ["_stext", "kvm_pmu_handle_event", "reprogram_counter", "pmc_reprogram_counter.part.0",
        "perf_event_ctx_lock", "perf_event_ctx_lock_nested.isra.0", "__mutex_lock.constprop.0",
        "mutex_spin_on_owner", "perf_event_ctx_unlock", "perf_event_period", "perf_ioctl", "process_one_work",
        "worker_run", "zz_end"]
KALLSYMS = {name: 0xFFFFFFFF81000000 + 0x800 * i for i, name in enumerate(SYMS)}
CMDLINES = {**{5001 + v: f"CPU {v}/KVM" for v in range(VCPUS)}, 6001: "perf", 77: "kworker/0:1"}


def scenario(seed: int = 7) -> dict[str, pl.DataFrame]:
    """The entry/exit frames (see the module docstring)."""
    rng = random.Random(seed)
    ent: list[tuple] = []
    ex: list[tuple] = []

    def call(cpu: int, pid: int, t: int, depth: int, name: str, body) -> tuple[int, int]:
        """Enter ``name`` at ``t``; ``body(cpu, t)`` runs the callees and returns (cpu, time) after them."""
        ent.append((t, cpu, pid, KALLSYMS[name], depth))
        cpu2, t2 = body(cpu, t + rng.randint(90, 300))
        t3 = t2 + rng.randint(90, 300)
        ex.append((t3, cpu2, pid, KALLSYMS[name], depth, 0, t, t3))
        return cpu2, t3

    def leaf(name: str, depth: int, pid: int, dur: int):
        return lambda cpu, t: call(cpu, pid, t, depth, name, lambda c, u: (c, u + dur))

    def seq(*steps):
        def run(cpu, t):
            for s in steps:
                cpu, t = s(cpu, t + rng.randint(40, 200))
            return cpu, t
        return run

    def vcpu_call(v: int, t: int) -> None:
        pid, burst = 5001 + v, ((t - 1_000_000_000) / 1e9 - 0.3) % PERIOD_S < BURST_S
        if burst:
            spin = rng.randint(500_000, 1_500_000)
            sleep = rng.randint(4_500_000, 10_500_000)
            moved = rng.random() < 0.3

            def mutex(cpu, u):
                cpu, u = leaf("mutex_spin_on_owner", 6, pid, spin)(cpu, u)
                return (3 if moved else cpu), u + sleep
        else:
            def mutex(cpu, u):
                return cpu, u + rng.randint(2_000, 20_000)

        def lock(cpu, u):
            return call(cpu, pid, u, 5, "__mutex_lock.constprop.0", mutex)

        def nested(cpu, u):
            return call(cpu, pid, u, 4, "perf_event_ctx_lock_nested.isra.0", lock)

        def outer(cpu, u):
            return call(cpu, pid, u, 3, "perf_event_ctx_lock", nested)

        def pmc(cpu, u):
            return call(cpu, pid, u, 2, "pmc_reprogram_counter.part.0", seq(
                outer, leaf("perf_event_period", 3, pid, rng.randint(300, 900)),
                leaf("perf_event_ctx_unlock", 3, pid, rng.randint(200, 700))))

        def rep(cpu, u):
            return call(cpu, pid, u, 1, "reprogram_counter", pmc)

        call(v, pid, t, 0, "kvm_pmu_handle_event", rep)

    slots = int(DURATION_S * 50)
    for k in range(slots):
        for v in range(VCPUS):
            vcpu_call(v, 1_000_000_000 + k * 20_000_000 + v * 1_237 + rng.randint(0, 400_000))
        if k % 5 == 2:   # the perf thread on CPU 3
            t = 1_000_000_000 + k * 20_000_000 + 18_500_000 + rng.randint(0, 300_000)
            call(3, 6001, t, 0, "perf_ioctl", lambda c, u: call(c, 6001, u, 1, "perf_event_ctx_lock_nested.isra.0",
                                                                 leaf("__mutex_lock.constprop.0", 2, 6001, 1_500)))
        if k % 19 == 11:  # a kworker between two vCPU calls on CPU 0
            t = 1_000_000_000 + k * 20_000_000 + 17_500_000 + rng.randint(0, 200_000)
            call(0, 77, t, 0, "process_one_work", leaf("worker_run", 1, 77, rng.randint(5_000, 50_000)))
    entry = pl.DataFrame(ent, schema={"ts": pl.Int64, "cpu": pl.Int32, "common_pid": pl.Int32, "func": pl.UInt64,
                                      "depth": pl.UInt32}, orient="row").sort("ts")
    exit_ = pl.DataFrame(ex, schema={"ts": pl.Int64, "cpu": pl.Int32, "common_pid": pl.Int32, "func": pl.UInt64,
                                     "depth": pl.UInt32, "overrun": pl.UInt32, "calltime": pl.UInt64,
                                     "rettime": pl.UInt64}, orient="row").sort("ts")
    return {"ftrace:funcgraph_entry": entry, "ftrace:funcgraph_exit": exit_}


# --- tracefs layout (kernel/trace/trace_functions_graph.c, trace_output.c) -------------------------------------
_LINE = re.compile(r"^\s*(?P<comm>\S.*?)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+(?P<ts>\d+\.\d+): (?P<ev>funcgraph_\w+):"
                   r"\s+(?P<info>.*)$")
_INFO = re.compile(r"^(?:[+!#*@$] )?\s*(?:(?P<dur>\d+)\.(?P<ns>\d{3}) us\s*)?\|(?P<call>.*)$")
_MARKS = ((1_000_000_000, "$"), (100_000_000, "@"), (10_000_000, "*"), (1_000_000, "#"), (100_000, "!"),
          (10_000, "+"))


def _mark(d: int) -> str:
    return next((m for v, m in _MARKS if d > v), " ")


def _duration(d: int) -> str:
    """print_graph_duration with overhead: mark, trace_print_graph_duration (at most 7 digits), ``|  ``."""
    usecs, rem = divmod(d, 1000)
    s = str(usecs)
    if len(s) < 7:
        s += "." + f"{rem:03d}"[: min(5, 8 - len(s)) - 1]
    return f"{_mark(d)} {s} us " + " " * max(0, 8 - len(s)) + "|  "


def _proc(comm: str, pid: int) -> str:
    text = f"{comm[:7]}-{pid}"
    spaces = max(0, 14 - len(text))
    return " " * (spaces // 2) + text + " " * (spaces - spaces // 2)


def tracefs(report: str, proc: bool) -> str:
    """The kernel's function_graph layout of the records trace-cmd printed in ``report`` (see the docstring)."""
    head = "#     TIME        CPU" + ("  TASK/PID       " if proc else "") + "  DURATION                  FUNCTION CALLS\n"
    head += "#      |          |  " + ("   |    |        " if proc else "") + "   |   |                     |   |   |   |\n"
    out = ["# tracer: function_graph\n", "#\n", head]
    last: dict[int, tuple[str, int]] = {}
    for line in report.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        comm, pid, cpu = m["comm"], int(m["pid"]), int(m["cpu"])
        prev = last.get(cpu)
        if prev is not None and prev[1] != pid:
            out.append(f" ------------------------------------------\n {cpu}) {_proc(*prev)} => {_proc(comm, pid)}\n"
                       " ------------------------------------------\n\n")
        last[cpu] = (comm, pid)
        i = _INFO.match(m["info"])
        secs, usecs = m["ts"].split(".")
        dur = "              |  " if i["dur"] is None else _duration(int(i["dur"]) * 1000 + int(i["ns"]))
        out.append(f"{int(secs):5d}.{usecs} |   {cpu}) " + (f"{_proc(comm, pid)} | " if proc else "")
                   + dur + i["call"][2:] + "\n")
    return "".join(out)


def report(dat: Path, *args: str) -> str:
    return subprocess.run(["trace-cmd", "report", *args, str(dat)], check=True, capture_output=True,
                          text=True).stdout


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    dat = OUT / "graph.dat"
    write_tracedat(dat, scenario(), version=7, compression="zstd", cpus=4, kallsyms=KALLSYMS, cmdlines=CMDLINES)
    z = zstandard.ZstdCompressor(level=19)
    text = report(dat)
    outs = {"report": text, "report_t": report(dat, "-t"),
            "report_tail": report(dat, "-O", "fgraph:tailprint", "-O", "fgraph:depth"), "tracefs": tracefs(text, proc=True),
            "tracefs_noproc": tracefs(text, proc=False)}
    for opt in ("-R", "-N"):   # the raw and the print-fmt forms: every record on its own line; a head is enough
        outs[f"report{opt[1]}_head"] = "".join(report(dat, opt).splitlines(keepends=True)[:HEAD_LINES])
    for name, body in outs.items():
        (OUT / f"{name}.txt.zst").write_bytes(z.compress(body.encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
