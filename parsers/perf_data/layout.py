"""Binary layouts of perf.data, declared once as numpy dtypes (little endian; :func:`swapped` gives the other order).

Spec: ``tools/perf/Documentation/perf.data-file-format.txt`` and ``include/uapi/linux/perf_event.h`` of Linux 6.x
(perf_file_header v2 ``PERFILE2``, perf_event_attr up to PERF_ATTR_SIZE_VER8 = 136 bytes). Field names are the
spec's own.
"""

from __future__ import annotations

import numpy as np

MAGIC = b"PERFILE2"
MAGIC_SWAPPED = MAGIC[::-1]  # a big-endian writer's u64 magic read as bytes

perf_file_section = np.dtype([("offset", "<u8"), ("size", "<u8")])

perf_file_header = np.dtype([
    ("magic", "<u8"),
    ("size", "<u8"),
    ("attr_size", "<u8"),
    ("attrs", perf_file_section),
    ("data", perf_file_section),
    ("event_types", perf_file_section),
    ("adds_features", "<u8", (4,)),
])

perf_pipe_file_header = np.dtype([("magic", "<u8"), ("size", "<u8")])

perf_event_header = np.dtype([("type", "<u4"), ("misc", "<u2"), ("size", "<u2")])

#: struct perf_event_attr (PERF_ATTR_SIZE_VER8); older/shorter attrs are zero-extended before viewing
perf_event_attr = np.dtype([
    ("type", "<u4"),
    ("size", "<u4"),
    ("config", "<u8"),
    ("sample_period", "<u8"),  # union with sample_freq
    ("sample_type", "<u8"),
    ("read_format", "<u8"),
    ("flags", "<u8"),  # the bitfield: disabled, inherit, … see ATTR_FLAG_*
    ("wakeup_events", "<u4"),
    ("bp_type", "<u4"),
    ("config1", "<u8"),
    ("config2", "<u8"),
    ("branch_sample_type", "<u8"),
    ("sample_regs_user", "<u8"),
    ("sample_stack_user", "<u4"),
    ("clockid", "<i4"),
    ("sample_regs_intr", "<u8"),
    ("aux_watermark", "<u4"),
    ("sample_max_stack", "<u2"),
    ("__reserved_2", "<u2"),
    ("aux_sample_size", "<u4"),
    ("__reserved_3", "<u4"),
    ("sig_data", "<u8"),
    ("config3", "<u8"),
])
ATTR_SIZE_VER0 = 64

# perf_event_attr bitfield positions (in ``flags``)
ATTR_FLAG_BITS = (
    "disabled", "inherit", "pinned", "exclusive", "exclude_user", "exclude_kernel", "exclude_hv", "exclude_idle",
    "mmap", "comm", "freq", "inherit_stat", "enable_on_exec", "task", "watermark", "precise_ip", "precise_ip_hi",
    "mmap_data", "sample_id_all", "exclude_host", "exclude_guest", "exclude_callchain_kernel",
    "exclude_callchain_user", "mmap2", "comm_exec", "use_clockid", "context_switch", "write_backward", "namespaces",
    "ksymbol", "bpf_event", "aux_output", "cgroup", "text_poke", "build_id", "inherit_thread", "remove_on_exec",
    "sigtrap",
)
FLAG_FREQ = 1 << 10
FLAG_SAMPLE_ID_ALL = 1 << 18

# enum perf_event_sample_format
SAMPLE_BITS = (
    "IP", "TID", "TIME", "ADDR", "READ", "CALLCHAIN", "ID", "CPU", "PERIOD", "STREAM_ID", "RAW", "BRANCH_STACK",
    "REGS_USER", "STACK_USER", "WEIGHT", "DATA_SRC", "IDENTIFIER", "TRANSACTION", "REGS_INTR", "PHYS_ADDR", "AUX",
    "CGROUP", "DATA_PAGE_SIZE", "CODE_PAGE_SIZE", "WEIGHT_STRUCT",
)
S = {name: 1 << i for i, name in enumerate(SAMPLE_BITS)}
#: the ``sample_id`` trailer of non-sample records (``sample_id_all``): these bits' u64 words, in this order
SAMPLE_ID_FIELDS = ("TID", "TIME", "ID", "STREAM_ID", "CPU", "IDENTIFIER")

# enum perf_event_read_format
READ_TOTAL_TIME_ENABLED, READ_TOTAL_TIME_RUNNING, READ_ID, READ_GROUP, READ_LOST = 1, 2, 4, 8, 16

PERF_SAMPLE_BRANCH_HW_INDEX = 1 << 17

# PERF_CONTEXT_* markers in callchains are the top 4095 values of u64
PERF_CONTEXT_MAX = np.uint64(2**64 - 4095)

# enum perf_event_type (kernel) and perf_user_event_type (tools/perf/util/event.h)
RECORD_TYPES = {
    1: "mmap", 2: "lost", 3: "comm", 4: "exit", 5: "throttle", 6: "unthrottle", 7: "fork", 8: "read", 9: "sample",
    10: "mmap2", 11: "aux", 12: "itrace_start", 13: "lost_samples", 14: "switch", 15: "switch_cpu_wide",
    16: "namespaces", 17: "ksymbol", 18: "bpf_event", 19: "cgroup", 20: "text_poke", 21: "aux_output_hw_id",
    64: "header_attr", 65: "header_event_type", 66: "header_tracing_data", 67: "header_build_id",
    68: "finished_round", 69: "id_index", 70: "auxtrace_info", 71: "auxtrace", 72: "auxtrace_error",
    73: "thread_map", 74: "cpu_map", 75: "stat_config", 76: "stat", 77: "stat_round", 78: "event_update",
    79: "time_conv", 80: "header_feature", 81: "compressed", 82: "finished_init", 83: "compressed2",
}
T = {name.upper(): num for num, name in RECORD_TYPES.items()}

# fixed bodies of the kernel records, after perf_event_header; sample_id (when sample_id_all) follows them.
# Variable tails (comm, filename, name) are NUL-terminated strings padded to 8 bytes.
RECORD_BODIES = {
    T["MMAP"]: np.dtype([("pid", "<u4"), ("tid", "<u4"), ("addr", "<u8"), ("len", "<u8"), ("pgoff", "<u8")]),
    T["MMAP2"]: np.dtype([("pid", "<u4"), ("tid", "<u4"), ("addr", "<u8"), ("len", "<u8"), ("pgoff", "<u8"),
                          ("maj", "<u4"), ("min", "<u4"), ("ino", "<u8"), ("ino_generation", "<u8"),
                          ("prot", "<u4"), ("flags", "<u4")]),
    T["COMM"]: np.dtype([("pid", "<u4"), ("tid", "<u4")]),
    T["FORK"]: np.dtype([("pid", "<u4"), ("ppid", "<u4"), ("tid", "<u4"), ("ptid", "<u4"), ("time", "<u8")]),
    T["EXIT"]: np.dtype([("pid", "<u4"), ("ppid", "<u4"), ("tid", "<u4"), ("ptid", "<u4"), ("time", "<u8")]),
    T["LOST"]: np.dtype([("id", "<u8"), ("lost", "<u8")]),
    T["LOST_SAMPLES"]: np.dtype([("lost", "<u8")]),
    T["THROTTLE"]: np.dtype([("time", "<u8"), ("id", "<u8"), ("stream_id", "<u8")]),
    T["UNTHROTTLE"]: np.dtype([("time", "<u8"), ("id", "<u8"), ("stream_id", "<u8")]),
    T["SWITCH"]: np.dtype([]),
    T["SWITCH_CPU_WIDE"]: np.dtype([("next_prev_pid", "<u4"), ("next_prev_tid", "<u4")]),
    T["KSYMBOL"]: np.dtype([("addr", "<u8"), ("len", "<u4"), ("ksym_type", "<u2"), ("flags", "<u2")]),
    T["BPF_EVENT"]: np.dtype([("type", "<u2"), ("flags", "<u2"), ("id", "<u4"), ("tag", "u1", (8,))]),
    T["CGROUP"]: np.dtype([("id", "<u8")]),
    T["TEXT_POKE"]: np.dtype([("addr", "<u8"), ("old_len", "<u2"), ("new_len", "<u2")]),
    T["ITRACE_START"]: np.dtype([("pid", "<u4"), ("tid", "<u4")]),
    T["AUX"]: np.dtype([("aux_offset", "<u8"), ("aux_size", "<u8"), ("flags", "<u8")]),
    T["AUX_OUTPUT_HW_ID"]: np.dtype([("hw_id", "<u8")]),
    T["TIME_CONV"]: np.dtype([("time_shift", "<u8"), ("time_mult", "<u8"), ("time_zero", "<u8"),
                              ("time_cycles", "<u8"), ("time_mask", "<u8"), ("cap_user_time_zero", "u1"),
                              ("cap_user_time_short", "u1")]),
    T["FINISHED_ROUND"]: np.dtype([]),
    T["FINISHED_INIT"]: np.dtype([]),
}
#: records whose body ends with a NUL-terminated string, and the column name it gets
RECORD_STRINGS = {T["MMAP"]: "filename", T["MMAP2"]: "filename", T["COMM"]: "comm", T["KSYMBOL"]: "name"}

# features: bit numbers of adds_features (tools/perf/util/header.h, enum HEADER_*)
FEATURES = (
    "reserved", "tracing_data", "build_id", "hostname", "osrelease", "version", "arch", "nrcpus", "cpudesc",
    "cpuid", "total_mem", "cmdline", "event_desc", "cpu_topology", "numa_topology", "branch_stack", "pmu_mappings",
    "group_desc", "auxtrace", "stat", "cache", "sample_time", "mem_topology", "clockid", "dir_format",
    "bpf_prog_info", "bpf_btf", "compressed", "cpu_pmu_caps", "clock_data", "hybrid_topology", "pmu_caps",
)

nrcpus = np.dtype([("nr_cpus_available", "<u4"), ("nr_cpus_online", "<u4")])
clock_data = np.dtype([("version", "<u4"), ("clockid", "<u4"), ("wall_clock_ns", "<u8"),
                       ("clockid_time_ns", "<u8")])
compressed = np.dtype([("version", "<u4"), ("type", "<u4"), ("level", "<u4"), ("ratio", "<u4"),
                       ("mmap_len", "<u4")])
sample_time = np.dtype([("first_sample_time", "<u8"), ("last_sample_time", "<u8")])
id_index_entry = np.dtype([("id", "<u8"), ("idx", "<u8"), ("cpu", "<u8"), ("tid", "<u8")])


def swapped(dt: np.dtype) -> np.dtype:
    """``dt`` in the other byte order (for files written on a big-endian host)."""
    return dt.newbyteorder(">")


def order(dt: np.dtype, big: bool) -> np.dtype:
    """``dt`` as the file stores it."""
    return swapped(dt) if big else dt
