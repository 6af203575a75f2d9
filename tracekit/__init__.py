"""tracekit: find out why a KVM guest's PMU misbehaves, from host traces and perf data.

Public API::

    import tracekit
    tr = tracekit.load("trace.dat")          # trace.dat v6/v7, perf.data, perf script or ftrace text
    tr.event_names, tr.counts(), tr.events("kvm_exit", symbolic=True), tr.render()

Errors are all :class:`tracekit.TracekitError` (see :mod:`tracekit.errors`).
"""

from .analysis import Analysis, analyze
from .api import detect_format, load
from .errors import (
    ConfigError,
    MissingEventError,
    MissingSymbolError,
    ParseError,
    TracekitError,
    TruncatedError,
    UnsupportedFormatError,
)
from .formats import EventFormat, Field
from .model import Trace
from .symbols import Kallsyms

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "load",
    "detect_format",
    "analyze",
    "Analysis",
    "Trace",
    "EventFormat",
    "Field",
    "Kallsyms",
    "TracekitError",
    "ParseError",
    "TruncatedError",
    "UnsupportedFormatError",
    "MissingEventError",
    "MissingSymbolError",
    "ConfigError",
]
