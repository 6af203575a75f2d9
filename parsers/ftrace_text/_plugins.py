"""The text that libtraceevent's plugins print in ``trace-cmd report``'s default output, and a few raw forms that a
plain print-fmt inversion cannot undo, turned back into field values.

Each handler takes the ``info`` column and the event's format and returns (``matched`` Boolean expression, {field:
expression}); rows that do not match fall back to the print-fmt inversion. Forms (libtraceevent 1.7 plugins):

- ``sched_switch``: ``prev_comm:prev_pid [prev_prio] STATE ==> next_comm:next_pid [next_prio]`` (plugin; its STATE
  letters ``SDTtZXxW`` stand for bits 0..7 and it drops the preempted ``+`` bit), and the kernel's own
  ``prev_comm=… prev_state=S+ ==> …`` whose ``__print_flags`` + ternary needs the format's state table;
- ``sched_wakeup`` / ``sched_wakeup_new``: ``comm:pid [prio] CPU:NNN`` (optionally `` success=N``);
- ``kvm_exit``: ``reason NAME rip 0xADDR info INFO1 INFO2`` (no vcpu: learnt from the thread's kvm_entry later; the
  plugin's names, e.g. SVM ``EXIT_IOIO``, come from :mod:`._kvm_reasons`, derived from trace-cmd itself);
- ``kvm_entry``: ``vcpu N rip 0xADDR``;
- ``kvm_emulate_insn``: ``csbase:rip: bytes`` (plugin) or ``csbase:rip:bytes (mode)`` (kernel);
- ``function``: ``func`` or ``func <-- parent`` (plugin), ``ip=func parent_ip=parent`` (``-R``) or ``func <-parent``
  (tracefs function tracer); names land in String columns ``ip_sym`` / ``parent_ip_sym``, hex addresses in ``ip`` /
  ``parent_ip``.

``trace-cmd report -R``'s ``name=value`` form of every event (``kernel_stack``: ``size=N caller=ARRAY[bytes]``, of
which trace-cmd prints only the first 8 words) is undone by :func:`._invert.raw_parser`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import polars as pl

from ...formats import EventFormat
from . import _kvm_reasons
from ._invert import symbol_table, to_dtype, unflag

Handler = Callable[[pl.Expr, EventFormat, dict], tuple[pl.Expr, dict[str, pl.Expr]]]

_PLUGIN_STATES = "SDTtZXxW"


def _groups(info: pl.Expr, rx: str) -> tuple[pl.Expr, Callable[[str], pl.Expr]]:
    g = info.str.extract_groups(rx)
    return info.str.contains(rx), lambda name: g.struct.field(name)


def _ints(get, schema: dict, names: tuple[str, ...], base: int = 10) -> dict[str, pl.Expr]:
    return {n: to_dtype(get(n), schema[n], base) for n in names if n in schema}


def _sched_switch(info: pl.Expr, fmt: EventFormat, schema: dict) -> tuple[pl.Expr, dict[str, pl.Expr]]:
    plug_rx = (r"^(?P<prev_comm>.*):(?P<prev_pid>-?\d+) \[(?P<prev_prio>-?\d+)\] (?P<prev_state>\S+) ==> "
               r"(?P<next_comm>.*):(?P<next_pid>-?\d+) \[(?P<next_prio>-?\d+)\]\s*$")
    raw_rx = (r"^prev_comm=(?P<prev_comm>.*) prev_pid=(?P<prev_pid>-?\d+) prev_prio=(?P<prev_prio>-?\d+) "
              r"prev_state=(?P<prev_state>\S+) ==> next_comm=(?P<next_comm>.*) next_pid=(?P<next_pid>-?\d+) "
              r"next_prio=(?P<next_prio>-?\d+)\s*$")
    pm, pget = _groups(info, plug_rx)
    rm, rget = _groups(info, raw_rx)
    get = lambda n: pl.when(rm).then(rget(n)).otherwise(pget(n))  # noqa: E731
    out = _ints(get, schema, ("prev_pid", "prev_prio", "next_pid", "next_prio"))
    for n in ("prev_comm", "next_comm"):
        if n in schema:
            out[n] = get(n)
    if "prev_state" in schema:
        dt = schema["prev_state"]
        table = symbol_table(fmt.print_fmt)
        preempt = 2 * max(table.values()) if table else 0x100
        raw_state = rget("prev_state")
        base = raw_state.str.strip_suffix("+")
        raw_val = (pl.when(base == "R").then(pl.lit(0, pl.UInt64)).otherwise(unflag(base, "|", table, pl.UInt64))
                   + pl.when(raw_state.str.ends_with("+")).then(pl.lit(preempt, pl.UInt64)).otherwise(0))
        plug_table = {c: 1 << i for i, c in enumerate(_PLUGIN_STATES)}
        ps = pget("prev_state")
        plug_val = pl.when(ps == "R").then(pl.lit(0, pl.UInt64)).otherwise(unflag(ps, "|", plug_table, pl.UInt64))
        out["prev_state"] = pl.when(rm).then(raw_val).otherwise(plug_val).cast(dt, wrap_numerical=True)
    return pm | rm, out


def _sched_wakeup(info: pl.Expr, fmt: EventFormat, schema: dict) -> tuple[pl.Expr, dict[str, pl.Expr]]:
    rx = (r"^(?P<comm>.*):(?P<pid>-?\d+) \[(?P<prio>-?\d+)\](?: success=(?P<success>\d+))? "
          r"CPU:(?P<target_cpu>\d+)\s*$")
    m, get = _groups(info, rx)
    out = _ints(get, schema, ("pid", "prio", "target_cpu", "success"))
    if "comm" in schema:
        out["comm"] = get("comm")
    return m, out


def _exit_tables(fmt: EventFormat) -> tuple[dict[str, int], dict[str, int]]:
    """The VMX (``isa == 1``) and SVM exit-reason tables of a kvm_exit print fmt."""
    parts = re.split(r"__print_symbolic\s*\(", fmt.print_fmt)
    vmx = symbol_table(parts[1]) if len(parts) > 1 else {}
    svm = symbol_table(parts[2]) if len(parts) > 2 else {}
    return vmx, svm


def _kvm_exit(info: pl.Expr, fmt: EventFormat, schema: dict) -> tuple[pl.Expr, dict[str, pl.Expr]]:
    rx = (r"^reason (?P<reason>.+?) rip 0x(?P<guest_rip>[0-9a-fA-F]+)"
          r"(?: info (?P<info1>[0-9a-fA-F]+) (?P<info2>[0-9a-fA-F]+))?\s*$")
    m, get = _groups(info, rx)
    out = _ints(get, schema, ("guest_rip", "info1", "info2"), 16)
    fvmx, fsvm = _exit_tables(fmt)
    vmx = {**fvmx, **_kvm_reasons.VMX}   # the plugin's own names win over the format's
    svm = {**fsvm, **_kvm_reasons.SVM}
    reason = get("reason")
    unknown = reason.str.extract(r"^UNKNOWN \((\d+)\)$", 1)
    in_vmx = reason.is_in(list(vmx))
    in_svm = reason.is_in(list(svm))
    vmx_v = reason.replace_strict(list(vmx), list(vmx.values()), default=None, return_dtype=pl.Int64)
    svm_v = reason.replace_strict(list(svm), list(svm.values()), default=None, return_dtype=pl.Int64)
    if "exit_reason" in schema:
        num = pl.coalesce(vmx_v, svm_v, unknown.str.to_integer(base=10, strict=False))
        out["exit_reason"] = num.cast(schema["exit_reason"], wrap_numerical=True)
    if "isa" in schema:
        # KVM_ISA_VMX = 1, KVM_ISA_SVM = 2; the plugin does not print it, the name tells
        out["isa"] = pl.when(in_vmx).then(1).when(in_svm).then(2).otherwise(None).cast(schema["isa"])
    return m, out


def _kvm_entry(info: pl.Expr, fmt: EventFormat, schema: dict) -> tuple[pl.Expr, dict[str, pl.Expr]]:
    m, get = _groups(info, r"^vcpu (?P<vcpu_id>\d+) rip 0x(?P<rip>[0-9a-fA-F]+)\s*$")
    out = _ints(get, schema, ("vcpu_id",)) | _ints(get, schema, ("rip",), 16)
    return m, out


def _kvm_emulate_insn(info: pl.Expr, fmt: EventFormat, schema: dict) -> tuple[pl.Expr, dict[str, pl.Expr]]:
    rx = (r"^(?P<csbase>[0-9a-fA-F]+):(?P<rip>[0-9a-fA-F]+):\s*(?P<insn>(?:[0-9a-fA-F]{2}(?:\s+|$))*?)\s*"
          r"(?:\((?P<mode>\w+)\))?\s*(?P<failed>failed|FAIL)?\s*$")
    m, get = _groups(info, rx)
    out = _ints(get, schema, ("csbase", "rip"), 16)
    insn = get("insn").str.strip_chars().str.split(" ").list.eval(
        pl.element().filter(pl.element() != "").str.to_integer(base=16, dtype=pl.UInt8, strict=False))
    if "len" in schema:
        out["len"] = insn.list.len().cast(schema["len"])
    if "insn" in schema and schema["insn"] == pl.List(pl.UInt8):
        out["insn"] = insn
    if "failed" in schema:
        out["failed"] = get("failed").is_not_null().cast(schema["failed"])
    if "flags" in schema:
        table = symbol_table(fmt.print_fmt)
        out["flags"] = get("mode").replace_strict(list(table), list(table.values()), default=None,
                                                  return_dtype=pl.Int64).cast(schema["flags"], wrap_numerical=True)
    return m, out


def _function(info: pl.Expr, fmt: EventFormat, schema: dict) -> tuple[pl.Expr, dict[str, pl.Expr]]:
    rx = r"^\s*(?:ip=)?(?P<ip>[^\s=]+)(?:\s+(?:<--?\s*|parent_ip=)(?P<parent>\S+))?(?:\s+args=ARRAY\[[^\]]*\])?\s*$"
    m, get = _groups(info, rx)
    out: dict[str, pl.Expr] = {}
    for tok, field in (("ip", "ip"), ("parent", "parent_ip")):
        t = get(tok)
        is_hex = t.str.contains(r"^0x[0-9a-fA-F]+$")
        if field in schema:
            out[field] = pl.when(is_hex).then(to_dtype(t, schema[field], 16))
        out[f"{field}_sym"] = pl.when(is_hex).then(None).otherwise(t)
    return m, out


def _kvm_userspace_exit(info: pl.Expr, fmt: EventFormat, schema: dict) -> tuple[pl.Expr, dict[str, pl.Expr]]:
    """``reason KVM_EXIT_IO (2)``: the kernel's nested ternary prints ``restart``/``error`` for a negative errno,
    else the reason's name."""
    m, get = _groups(info, r"^reason (?P<reason>\S+) \((?P<num>-?\d+)\)\s*$")
    failed = get("reason").is_in(["restart", "error"])
    num = get("num").str.to_integer(base=10, strict=False)
    out: dict[str, pl.Expr] = {}
    if "errno" in schema:
        # the number is -errno when errno < 0, else the reason; a non-negative errno is not printed (it is 0 when
        # KVM_RUN returns to user space normally, which is the only way it is traced)
        out["errno"] = pl.when(failed).then(-num).otherwise(0).cast(schema["errno"], wrap_numerical=True)
    if "reason" in schema:
        out["reason"] = pl.when(failed).then(None).otherwise(num).cast(schema["reason"], wrap_numerical=True)
    return m, out


HANDLERS: dict[str, Handler] = {
    "kvm_userspace_exit": _kvm_userspace_exit,
    "sched_switch": _sched_switch,
    "sched_wakeup": _sched_wakeup,
    "sched_wakeup_new": _sched_wakeup,
    "kvm_exit": _kvm_exit,
    "kvm_entry": _kvm_entry,
    "kvm_emulate_insn": _kvm_emulate_insn,
    "function": _function,
}
