"""Binary layouts of trace-cmd's trace.dat, declared once.

Implements the structures of trace-cmd.dat.v6(5) and trace-cmd.dat.v7(5) (trace-cmd 3.x, Documentation/trace-cmd/)
and of the Linux ring-buffer sub-buffer (``events/header_page``, ``events/header_event``; libtraceevent's
kbuffer-parse.c). Every dtype is declared little-endian with the spec's field names; :func:`order` gives the file's
byte order. Packed (``align=False``) as on disk.
"""

from __future__ import annotations

import numpy as np

MAGIC = b"\x17\x08\x44tracing"

#: v7 section header (``id``, ``flags``, string id of the description, ``size`` of the section on disk)
SECTION_HEADER = np.dtype([("id", "<u2"), ("flags", "<u2"), ("string_id", "<u4"), ("size", "<u8")])
SECTION_FL_COMPRESS = 1

#: header of a compressed metadata section (and of one chunk of compressed CPU data)
COMPRESSION_HEADER = np.dtype([("compressed_size", "<u4"), ("uncompressed_size", "<u4")])

#: header of one option inside an options list (v6 after ``options  \0``; v7 in section 0)
OPTION_HEADER = np.dtype([("id", "<u2"), ("size", "<u4")])

#: v6 ``flyrecord`` per-CPU entry
CPU_ENTRY_V6 = np.dtype([("offset", "<u8"), ("size", "<u8")])
#: v7 BUFFER option per-CPU entry
CPU_ENTRY_V7 = np.dtype([("cpu", "<u4"), ("offset", "<u8"), ("size", "<u8")])

#: TSC2NSEC option
TSC2NSEC = np.dtype([("mult", "<u4"), ("shift", "<u4"), ("offset", "<u8")])

#: ring-buffer sub-buffer header (``header_page``): ``commit`` is a kernel long
PAGE_HEADER_64 = np.dtype([("timestamp", "<u8"), ("commit", "<u8")])
PAGE_HEADER_32 = np.dtype([("timestamp", "<u8"), ("commit", "<u4")])

#: event header word: ``type_len`` 5 bits and ``time_delta`` 27 bits (bit order follows the file's endianness),
#: followed by ``array[0]`` for type_len 0, 29, 30, 31
EVENT_HEADER = np.dtype([("type_len_ts", "<u4")])

# the ring buffer's reserved type_len values and commit flags (kernel/trace/ring_buffer.c, kbuffer-parse.c)
TYPE_LEN_DATA_MAX = 28
TYPE_PADDING = 29
TYPE_TIME_EXTEND = 30
TYPE_TIME_STAMP = 31
TS_SHIFT = 27
TS_MSB = np.uint64(0xF8 << 56)
COMMIT_MASK = (1 << 27) - 1
MISSING_EVENTS = 1 << 31
MISSING_STORED = 1 << 30

# option / section ids (trace-cmd.dat.v7(5) "OPTIONS SECTION")
OPTION_NAMES = {
    0: "done", 1: "date", 2: "cpustat", 3: "buffer", 4: "traceclock", 5: "uname", 6: "hook", 7: "offset",
    8: "cpucount", 9: "version", 10: "procmaps", 11: "traceid", 12: "time_shift", 13: "guest", 14: "tsc2nsec",
    15: "strings", 16: "header_info", 17: "ftrace_events", 18: "event_formats", 19: "kallsyms", 20: "printk",
    21: "cmdlines", 22: "buffer_text", 23: "btf_file", 24: "last_boot_info", 25: "modules_file",
}
OPT_DONE, OPT_DATE, OPT_CPUSTAT, OPT_BUFFER, OPT_TRACECLOCK, OPT_UNAME = 0, 1, 2, 3, 4, 5
OPT_OFFSET, OPT_CPUCOUNT, OPT_VERSION, OPT_TRACEID, OPT_TIME_SHIFT, OPT_GUEST, OPT_TSC2NSEC = 7, 8, 9, 11, 12, 13, 14
SEC_STRINGS, SEC_HEADER_INFO, SEC_FTRACE_EVENTS, SEC_EVENT_FORMATS = 15, 16, 17, 18
SEC_KALLSYMS, SEC_PRINTK, SEC_CMDLINES, OPT_BUFFER_TEXT = 19, 20, 21, 22


def order(dtype: np.dtype, big_endian: bool) -> np.dtype:
    """``dtype`` in the file's byte order."""
    return dtype.newbyteorder(">") if big_endian else dtype
