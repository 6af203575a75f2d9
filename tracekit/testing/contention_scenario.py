"""Synthetic host traces of periodic mutex contention on the perf_event context mutex, with their ground truth.

Mirrors ``../shared/data/host-contention`` (Linux 6.18, ``trace-cmd record -e lock:contention_begin -e
lock:contention_end -O stacktrace``): threads of one process hammer one perf_event fd with ``ioctl``/``read``; every
call takes ``ctx->mutex`` through ``perf_event_ctx_lock_nested.isra.0`` → ``__mutex_lock.constprop.0``. As in
``kernel/locking/mutex.c`` a contended acquisition traces ``contention_begin(SPIN|MUTEX)`` before the optimistic
spin, then — when spinning fails — ``contention_begin(MUTEX)`` and a sleep (``sched_switch``, state D), and
``contention_end(ret=0)`` once the lock is taken; each lock event is followed by its ``ftrace:kernel_stack``
(``size`` callers, innermost ``trace_event_raw_event_contention_*``). Contention comes in bursts (``burst_s`` every
``period_s``); between bursts only run-queue spinlocks (``flags=SPIN``, from ``__schedule``) contend.

Ground truth is the generator's bookkeeping: every wait (thread, lock, begin/end, call path, slept or not) and the
burst intervals.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import polars as pl

from ..formats import EventFormat, builtin_formats
from .tracedat_writer import write_tracedat

__all__ = ["ContentionScenario", "build_contention_scenario", "WAIT_SCHEMA", "CONTENTION_KALLSYMS"]

WAIT_SCHEMA = {"pid": pl.Int32, "comm": pl.String, "cpu": pl.Int32, "lock_addr": pl.UInt64, "ts": pl.Int64,
               "end_ts": pl.Int64, "wait_ns": pl.Int64, "path": pl.String, "slept": pl.Boolean,
               "burst": pl.Int32}
"""One row per contended acquisition: ``ts`` the first ``contention_begin``, ``end_ts`` its ``contention_end``,
``path`` the syscall handler under the lock (``perf_ioctl``, ``perf_read``; ``__schedule`` for run-queue locks),
``burst`` the burst index (null outside bursts)."""

LCB_F_SPIN = 1 << 0
LCB_F_MUTEX = 1 << 5
TASK_UNINTERRUPTIBLE = 2
CTX_MUTEX = 0xFFFF8881055DFA08
RQ_LOCKS = (0xFFFF888627C2BA80, 0xFFFF888627D2BA80)

# addresses of this 6.18 kernel's symbols as the real recording shows them (host-contention kernel_stack)
CONTENTION_KALLSYMS: dict[str, int] = {
    "entry_SYSCALL_64_after_hwframe": 0xFFFFFFFF81000100, "__pfx_do_syscall_64": 0xFFFFFFFF821EF5F0,
    "do_syscall_64": 0xFFFFFFFF821EF600, "__x64_sys_ioctl": 0xFFFFFFFF816D9600, "ksys_read": 0xFFFFFFFF816B2A40,
    "__x64_sys_read": 0xFFFFFFFF816B2B10,
    "vfs_read": 0xFFFFFFFF816B2180, "perf_ioctl": 0xFFFFFFFF815778B0, "perf_read": 0xFFFFFFFF81577350,
    "perf_event_ctx_lock_nested.isra.0": 0xFFFFFFFF8156BB90, "__mutex_lock.constprop.0": 0xFFFFFFFF821FDC40,
    "mutex_lock": 0xFFFFFFFF821FE1A0, "trace_event_raw_event_contention_begin": 0xFFFFFFFF813DEAF0,
    "trace_event_raw_event_contention_end": 0xFFFFFFFF813DEBA0, "_raw_spin_lock": 0xFFFFFFFF82203870,
    "__pv_queued_spin_lock_slowpath": 0xFFFFFFFF82203C80, "__schedule": 0xFFFFFFFF821FA3A0,
    "schedule": 0xFFFFFFFF821FB600, "exit_to_user_mode_loop": 0xFFFFFFFF814173C0,
    "schedule_preempt_disabled": 0xFFFFFFFF821FB8D0, "_etext": 0xFFFFFFFF82400000,
}


@dataclass
class ContentionScenario:
    """A generated contention trace and what is true about it.

    Attributes:
        events: frames keyed by ``system:event`` (``ts``, ``cpu``, ``common_pid``, ``seq``, fields).
        formats: the Linux 6.18 formats.
        waits: every contended acquisition, :data:`WAIT_SCHEMA`.
        bursts: ``start_ns``, ``end_ns`` of every burst.
        period_ns, burst_ns: the generator's period and burst length.
        kallsyms, cmdlines, cpus: what the file carries.
        params: the arguments the scenario was built with.
    """

    events: dict[str, pl.DataFrame]
    formats: dict[str, EventFormat]
    waits: pl.DataFrame
    bursts: pl.DataFrame
    period_ns: int
    burst_ns: int
    kallsyms: dict[str, int]
    cmdlines: dict[int, str]
    cpus: int
    params: dict = field(default_factory=dict)

    def write(self, path: str | os.PathLike, version: int = 7, compression: str = "none") -> int:
        """Write the scenario as a trace.dat file; returns the event count."""
        return write_tracedat(path, self.events, self.formats, version=version, compression=compression,
                              cpus=self.cpus, kallsyms=self.kallsyms, cmdlines=self.cmdlines,
                              uname="Linux contention-host 6.18.0 x86_64")


def build_contention_scenario(seed: int = 0, *, period_s: float = 1.0, burst_s: float = 0.2, duration_s: float = 3.0,
                              threads: int = 6, wait_us: float = 150.0, hold_us: float = 30.0,
                              background_hz: float = 50.0,
                              read_share: float = 0.3, spin_share: float = 0.6, phase_s: float = 0.1,
                              start_ns: int = 3_553_000_000_000) -> ContentionScenario:
    """Generate periodic bursts of ``perf_event_ctx_lock_nested`` mutex contention.

    Args:
        seed: the random seed; the same arguments give the same scenario.
        period_s, burst_s: a burst of contention of ``burst_s`` starts every ``period_s`` (first at ``phase_s``).
        duration_s: traced time.
        threads: worker threads (``perf_ctx_conten``), each on its own CPU.
        wait_us: mean sleep of an acquisition that does not win while spinning; hold_us: mean time between a
            thread's acquisitions inside a burst (holding the lock and running).
        background_hz: run-queue spinlock contentions per thread per second between bursts (never the perf mutex).
        read_share: share of acquisitions under ``read()`` (``perf_read``) rather than ``ioctl`` (``perf_ioctl``).
        spin_share: share of acquisitions won while spinning (else the thread sleeps).
        start_ns: trace clock at the start.

    Returns:
        the :class:`ContentionScenario`.
    """
    params = dict(locals())
    rng = random.Random(seed)
    formats = builtin_formats()
    ks = CONTENTION_KALLSYMS
    rows: dict[str, list[tuple]] = {}
    seq = [0]

    def emit(name: str, ts: int, cpu: int, pid: int, **fields) -> None:
        seq[0] += 1
        rows.setdefault(name, []).append((ts, cpu, pid, seq[0], fields))

    def stack(ts: int, cpu: int, pid: int, frames: list[int]) -> None:
        emit("ftrace:kernel_stack", ts, cpu, pid, size=len(frames), caller=frames)

    def mutex_frames(begin: bool, path: str) -> list[int]:
        top = ks["trace_event_raw_event_contention_begin" if begin else "trace_event_raw_event_contention_end"]
        if path == "perf_ioctl":
            outer = [ks["perf_ioctl"] + 0x70, ks["__x64_sys_ioctl"] + 0xAB]
        else:
            outer = [ks["perf_read"] + 0x4D, ks["vfs_read"] + 0xC6, ks["ksys_read"] + 0x73,
                     ks["__x64_sys_read"] + 0x19]
        return [top + (0x9B if begin else 0x8B), ks["__mutex_lock.constprop.0"] + (0x271 if begin else 0x2D2),
                ks["perf_event_ctx_lock_nested.isra.0"] + 0x96, *outer, ks["do_syscall_64"] + 0x91,
                ks["entry_SYSCALL_64_after_hwframe"] + 0x30]

    def rq_frames(begin: bool) -> list[int]:
        top = ks["trace_event_raw_event_contention_begin" if begin else "trace_event_raw_event_contention_end"]
        return [top + (0x9B if begin else 0x8B), ks["__pv_queued_spin_lock_slowpath"] + 0x27E,
                ks["_raw_spin_lock"] + 0x2B, ks["__schedule"] + 0x3CD, ks["schedule"] + 0x43,
                ks["exit_to_user_mode_loop"] + 0x81, ks["do_syscall_64"] + 0x25B,
                ks["entry_SYSCALL_64_after_hwframe"] + 0x30]

    end = start_ns + int(duration_s * 1e9)
    period = int(period_s * 1e9)
    burst = int(burst_s * 1e9)
    bursts = []
    b0 = start_ns + int(phase_s * 1e9)
    while b0 < end:
        bursts.append((b0, min(b0 + burst, end)))
        b0 += period
    pid0 = 27766
    comm = "perf_ctx_conten"
    waits = []

    def burst_of(t: int) -> int | None:
        return next((i for i, (bs, be) in enumerate(bursts) if bs <= t < be), None)

    for k in range(threads):   # one timeline per thread, each pinned to its own CPU: nothing overlaps on a CPU
        pid, cpu = pid0 + 1 + k, k
        t = start_ns + rng.randrange(0, 50_000)
        while t < end:
            bi = burst_of(t)
            if bi is None:     # between bursts: the odd run-queue spinlock from __schedule
                nxt = t + int(rng.expovariate(background_hz) * 1e9)
                upcoming = next((bs for bs, _ in bursts if bs > t), end)
                if nxt >= upcoming:
                    t = upcoming + rng.randrange(0, 20_000)
                    continue
                t = nxt
                lock = RQ_LOCKS[cpu % len(RQ_LOCKS)]
                emit("lock:contention_begin", t, cpu, pid, lock_addr=lock, flags=LCB_F_SPIN)
                stack(t + 2_000, cpu, pid, rq_frames(True))
                t_end = t + 2_500 + rng.randrange(200, 2_000)
                emit("lock:contention_end", t_end, cpu, pid, lock_addr=lock, ret=0)
                stack(t_end + 1_500, cpu, pid, rq_frames(False))
                waits.append((pid, comm, cpu, lock, t, t_end, t_end - t, "__schedule", False, None))
                t = t_end + 2_000
                continue
            path = "perf_read" if rng.random() < read_share else "perf_ioctl"
            emit("lock:contention_begin", t, cpu, pid, lock_addr=CTX_MUTEX, flags=LCB_F_SPIN | LCB_F_MUTEX)
            stack(t + 2_500, cpu, pid, mutex_frames(True, path))
            slept = rng.random() >= spin_share
            if slept:
                t2 = t + 4_000 + rng.randrange(1_000, 8_000)
                emit("lock:contention_begin", t2, cpu, pid, lock_addr=CTX_MUTEX, flags=LCB_F_MUTEX)
                stack(t2 + 2_500, cpu, pid, mutex_frames(True, path))
                emit("sched:sched_switch", t2 + 5_000, cpu, pid, prev_comm=comm, prev_pid=pid, prev_prio=120,
                     prev_state=TASK_UNINTERRUPTIBLE, next_comm=f"swapper/{cpu}", next_pid=0, next_prio=120)
                wake = t2 + 5_000 + int(rng.expovariate(1 / (wait_us * 1000)))
                emit("sched:sched_switch", wake, cpu, 0, prev_comm=f"swapper/{cpu}", prev_pid=0, prev_prio=120,
                     prev_state=0, next_comm=comm, next_pid=pid, next_prio=120)
                t_end = wake + rng.randrange(1_000, 4_000)
            else:
                t_end = t + 4_000 + int(rng.expovariate(1 / 6_000))
            emit("lock:contention_end", t_end, cpu, pid, lock_addr=CTX_MUTEX, ret=0)
            stack(t_end + 2_000, cpu, pid, mutex_frames(False, path))
            waits.append((pid, comm, cpu, CTX_MUTEX, t, t_end, t_end - t, path, slept, bi))
            t = t_end + 3_000 + int(rng.expovariate(1 / (hold_us * 1000)))
    events = {}
    for name, rs in rows.items():
        own = {f.name: f.dtype() for f in formats[name].own_fields if f.size}
        cols = {"ts": [r[0] for r in rs], "cpu": [r[1] for r in rs], "common_pid": [r[2] for r in rs],
                "seq": [r[3] for r in rs]}
        for k, dt in own.items():
            cols[k] = [r[4].get(k, "" if dt == pl.String else 0) for r in rs]
        if name == "ftrace:kernel_stack":
            own["caller"] = pl.List(pl.UInt64)
        events[name] = pl.DataFrame(cols, schema={"ts": pl.Int64, "cpu": pl.Int32, "common_pid": pl.Int32,
                                                  "seq": pl.Int64, **own}, strict=False)
    wait_df = pl.DataFrame(waits, schema=WAIT_SCHEMA, orient="row").sort("ts", "pid")
    cmdlines = {pid0: "perf", **{pid0 + 1 + k: comm for k in range(threads)}}
    return ContentionScenario(events=events, formats=dict(formats), waits=wait_df,
                              bursts=pl.DataFrame(bursts, schema={"start_ns": pl.Int64, "end_ns": pl.Int64},
                                                  orient="row"),
                              period_ns=period, burst_ns=burst, kallsyms=dict(ks), cmdlines=cmdlines, cpus=threads,
                              params=params)
