"""``tracekit.load``: recognise an input's format from its content and hand it to one parser."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import zstandard

from .errors import ParseError, TracekitError, UnsupportedFormatError
from .model import Trace

__all__ = ["load", "detect_format"]

_HEAD = 64 * 1024
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC = b"\x1f\x8b"


def _text_head(head: bytes) -> bytes:
    """First bytes of the text inside a gzip/zstd file (text inputs may be compressed); else ``head``."""
    try:
        if head.startswith(_ZSTD_MAGIC):
            dctx = zstandard.ZstdDecompressor()
            with dctx.stream_reader(head, read_across_frames=True) as r:
                return r.read(_HEAD)
        if head.startswith(_GZIP_MAGIC):
            d = gzip.zlib.decompressobj(16 + gzip.zlib.MAX_WBITS)
            return d.decompress(head, _HEAD)
    except (zstandard.ZstdError, gzip.zlib.error, EOFError):
        return head
    return head


def detect_format(path: str | os.PathLike) -> str:
    """Name of the format of ``path`` (``trace.dat``, ``perf.data``, ``perf-script``, ``ftrace-text``, …).

    Raises:
        UnsupportedFormatError: nothing recognises the content.
        ParseError: the file cannot be read.
    """
    from . import parsers

    p = Path(path)
    if p.is_dir():
        if (p / "data").is_file():
            return "perf.data"
        if any(p.glob("*.parquet")) or any(p.glob("*/*.parquet")):
            return "parquet"
        raise UnsupportedFormatError(p, "a directory that is neither perf.data (with data, data.N) nor Parquet")
    try:
        with open(p, "rb") as f:
            head = f.read(_HEAD)
    except OSError as exc:
        raise ParseError(p, None, "a readable file", exc.strerror) from exc
    if not head:
        raise UnsupportedFormatError(p, "empty file: expected trace.dat, perf.data or trace text", 0)
    texty = _text_head(head)
    for name, modname in parsers.FORMATS:
        mod = parsers.module(modname)
        if mod is None:
            continue
        if mod.sniff(head) or (texty is not head and mod.sniff(texty)):
            return name
    raise UnsupportedFormatError(p, f"unrecognised content (starts {head[:16]!r}): expected trace.dat, perf.data, "
                                    "perf script or ftrace/trace-cmd text", 0)


def load(path: str | os.PathLike, *, progress: Callable[[int, int], None] | None = None, **options) -> Trace:
    """Read a trace or perf recording into a :class:`~tracekit.Trace`.

    The format is recognised from the content, not the name: trace.dat v6/v7, perf.data (file, ``--threads``
    directory, pipe), ``perf script`` text, tracefs / ``trace-cmd report`` text (plain, gzip or zstd).

    Args:
        path: the input file or directory.
        progress: called as ``progress(done, total)`` while reading big inputs.
        **options: passed to the format's reader (``buffer=`` for trace.dat, ``kallsyms=``, ``formats=`` …).

    Raises:
        TracekitError: the input is missing, damaged or of an unknown format (a subclass says which).
    """
    from . import parsers

    p = Path(path)
    if not p.exists():
        raise ParseError(p, None, "an existing file", "no such file or directory")
    fmt = detect_format(p)
    modname = dict(parsers.FORMATS).get(fmt, fmt)
    mod = parsers.module(modname)
    if mod is None:
        raise UnsupportedFormatError(p, f"{fmt} input is recognised but its reader is not installed")
    try:
        return mod.read(p, progress=progress, **options)
    except TracekitError:
        raise
    except (MemoryError, RecursionError) as exc:
        raise ParseError(p, None, "an input of sane size and structure", type(exc).__name__) from exc
