"""Event formats a KVM engineer adds by hand: kprobe events, written the way Linux 6.18 prints a kprobe's format.

``echo 'p:kprobes/kvm_pmu_deliver_pmi kvm_pmu_deliver_pmi' >> /sys/kernel/tracing/kprobe_events`` creates an event
whose ``format`` file has the common fields, ``__probe_ip`` (``unsigned long``, offset 8) and the fetch arguments
(here none), with ``print fmt: "(%lx)", REC->__probe_ip`` (``kernel/trace/trace_probe.c``,
``traceprobe_set_print_fmt``). IDs are allocated above the static tracepoints, as the kernel does for dynamic events.
"""

from __future__ import annotations

from ..formats import EventFormat, builtin_formats, parse_format

__all__ = ["kprobe_format", "kvm_formats", "PMI_KPROBE", "INJ_NMI_KPROBE"]

PMI_KPROBE = "kprobes:kvm_pmu_deliver_pmi"
INJ_NMI_KPROBE = "kprobes:kvm_inj_nmi"

_COMMON = (
    "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
    "\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n"
    "\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n"
    "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n"
)


def kprobe_format(name: str, event_id: int, system: str = "kprobes",
                  args: tuple[tuple[str, str], ...] = ()) -> EventFormat:
    """The format of a kprobe event ``system:name`` with fetch arguments ``args`` (``(name, "u64"|"u32")``).

    Args:
        name: the event name.
        event_id: its ``ID:`` (dynamic events get IDs above the static ones).
        system: ``kprobes`` (the default group) or the group given in ``p:GROUP/NAME``.
        args: fetch arguments, each ``(name, type)`` with type ``u64``/``u32``/``s64``/``s32``.

    Returns:
        the parsed format (its ``text`` is what tracefs prints).
    """
    lines = [f"name: {name}", f"ID: {event_id}", "format:", _COMMON.rstrip("\n"), "",
             "\tfield:unsigned long __probe_ip;\toffset:8;\tsize:8;\tsigned:0;"]
    offset = 16
    fmts, refs = ["(%lx)"], ["REC->__probe_ip"]
    for arg, typ in args:
        size = 8 if typ.endswith("64") else 4
        lines.append(f"\tfield:{typ} {arg};\toffset:{offset};\tsize:{size};\tsigned:{int(typ[0] == 's')};")
        offset += size
        fmts.append(f"{arg}=%{'L' if size == 8 else ''}{'d' if typ[0] == 's' else 'u'}")
        refs.append(f"REC->{arg}")
    lines += ["", f"print fmt: \"{' '.join(fmts)}\", {', '.join(refs)}", ""]
    return parse_format("\n".join(lines), system)


def kvm_formats(*, kprobe_system: str = "kprobes") -> dict[str, EventFormat]:
    """The bundled Linux 6.18 formats plus the kprobes ``kvm_pmu_deliver_pmi`` and ``kvm_inj_nmi``.

    ``kvm_inj_nmi`` is a kprobe on ``vmx_inject_nmi`` / ``svm_inject_nmi`` named after the old ``kvm_inj_nmi``
    tracepoint; neither probe has fetch arguments.
    """
    out = dict(builtin_formats())
    top = max(f.id for f in out.values())
    base = max(2000, top + 1)
    for i, name in enumerate(("kvm_pmu_deliver_pmi", "kvm_inj_nmi")):
        fmt = kprobe_format(name, base + i, kprobe_system)
        out[fmt.full_name] = fmt
    return out
