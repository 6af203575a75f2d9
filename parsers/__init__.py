"""Input format readers, one module per format. Each exposes ``sniff(head: bytes) -> bool`` and
``read(source, **options) -> tracekit.Trace``; :func:`tracekit.load` picks the first whose ``sniff`` accepts the
input's first bytes. Order matters: binary magics first, then text forms from the most to the least specific."""

from __future__ import annotations

import importlib
from types import ModuleType

#: (format name, module under tracekit.parsers), in sniffing order
FORMATS: tuple[tuple[str, str], ...] = (
    ("trace.dat", "tracedat"),
    ("perf.data", "perf_data"),
    ("perf-script", "perf_script"),
    ("ftrace-text", "ftrace_text"),
    ("parquet", "parquet_dataset"),  # a tracekit convert directory (never sniffed: detect_format sees the dir)
)


def module(name: str) -> ModuleType | None:
    """Import the parser module ``name``; None when it is not part of this build."""
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(f"{__name__}.{name}"):
            return None
        raise
