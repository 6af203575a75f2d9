"""Bytes of a text trace → a Polars frame of its lines (``line_no``, ``line``), decompressing gzip/zstd and refusing
binary or oversized input before it costs memory."""

from __future__ import annotations

import gzip
import io
import mmap
import os
import zlib

import polars as pl
import zstandard

from ...errors import ParseError, TruncatedError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"

#: default ceiling on the (decompressed) text size; ``read(..., max_bytes=N)`` moves it
MAX_BYTES = 4 << 30
_CHUNK = 1 << 24
_MAP_FROM = 1 << 24


def _read_capped(stream: io.RawIOBase | io.BufferedIOBase, path: str, max_bytes: int, what: str) -> bytes:
    """Read ``stream`` to its end, refusing more than ``max_bytes`` (a zip bomb or a huge file)."""
    buf = bytearray()
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > max_bytes:
            raise ParseError(path, max_bytes, f"{what} of at most {max_bytes} bytes (pass max_bytes= to read more)",
                             "more")


def _read_zstd(f, path: str, max_bytes: int) -> bytes:
    """Decompress every zstd frame of ``f``; a last frame that does not end is a truncation."""
    dctx = zstandard.ZstdDecompressor()
    obj = dctx.decompressobj()
    buf = bytearray()
    in_frame = False
    pos = 0
    while chunk := f.read(1 << 16):
        pos += len(chunk)
        while chunk:
            buf += obj.decompress(chunk)
            in_frame = not obj.eof
            if len(buf) > max_bytes:
                raise ParseError(path, pos, f"zstd-compressed text of at most {max_bytes} bytes "
                                            "(pass max_bytes= to read more)", "more")
            if obj.eof:
                chunk = obj.unused_data
                obj = dctx.decompressobj()
            else:
                chunk = b""
    if in_frame:
        raise TruncatedError(path, pos, "the rest of the zstd frame", "end of file")
    return bytes(buf)


def read_bytes(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> tuple[bytes | mmap.mmap, str | None]:
    """The text of ``path``, decompressed when it is gzip or zstd.

    Returns:
        (text bytes — a read-only map of a plain file of ``_MAP_FROM`` bytes or more —, compression name or None).

    Raises:
        ParseError: unreadable, larger than ``max_bytes``, or a damaged compressed stream.
        TruncatedError: a compressed stream that ends early.
    """
    p = os.fspath(path)
    try:
        f = open(p, "rb")
    except OSError as exc:
        raise ParseError(p, None, "a readable file", exc.strerror) from exc
    with f:
        head = f.read(4)
        f.seek(0)
        try:
            if head.startswith(ZSTD_MAGIC):
                return _read_zstd(f, p, max_bytes), "zstd"
            if head.startswith(GZIP_MAGIC):
                with gzip.GzipFile(fileobj=f) as g:
                    return _read_capped(g, p, max_bytes, "gzip-compressed text"), "gzip"
        except EOFError as exc:
            raise TruncatedError(p, os.path.getsize(p), "the rest of the compressed stream", "end of file") from exc
        except (zstandard.ZstdError, zlib.error, gzip.BadGzipFile) as exc:
            raise ParseError(p, None, f"a valid {'zstd' if head.startswith(ZSTD_MAGIC) else 'gzip'} stream",
                             str(exc)[:80]) from exc
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise ParseError(p, max_bytes, f"a text file of at most {max_bytes} bytes (pass max_bytes= to read more)",
                             f"{size} bytes")
        if size >= _MAP_FROM:
            # mapped, not copied: the page cache is read in place (a 267 MB report: -0.4 s)
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), None
        return f.read(), None


def check_text(data: bytes, path: str) -> None:
    """Refuse binary content: a NUL byte cannot occur in trace text.

    Raises:
        ParseError: at the offset of the first NUL byte.
    """
    nul = data.find(b"\x00")
    if nul >= 0:
        raise ParseError(path, nul, "ftrace / trace-cmd report text", "a NUL byte (binary data)")


def lines_frame(data: bytes) -> pl.DataFrame:
    """One row per line: ``line_no`` (UInt32, 1-based) and ``line`` (String; invalid UTF-8 replaced, CR dropped).

    Split by Polars' CSV reader with a separator byte that cannot occur (multi-threaded, no Python objects per
    line); text holding that byte is split in Python instead."""
    if b"\x01" not in data:
        df = pl.read_csv(io.BytesIO(data), has_header=False, separator="\x01", quote_char=None,
                         schema={"line": pl.String}, encoding="utf8-lossy", truncate_ragged_lines=True)
        s = df.to_series().fill_null("")
    else:
        text = data.decode("utf-8", "replace")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        s = pl.Series("line", lines, dtype=pl.String)
    if b"\r" in data:
        s = s.str.strip_chars_end("\r")
    return pl.DataFrame([s.alias("line")]).with_row_index("line_no", offset=1)
