"""perf.data reader: file (``PERFILE2``, either byte order), ``--threads`` directory, pipe mode, zstd-compressed.

Implements ``tools/perf/Documentation/perf.data-file-format.txt`` and ``include/uapi/linux/perf_event.h`` of
Linux 6.x (perf 6.1 as writer): the file header, attrs and ids, feature sections, and every record type, with
PERF_RECORD_SAMPLE decoded for all ``sample_type`` bits. Layouts are in :mod:`.layout`, features in :mod:`.header`,
the record walk and non-sample tables in :mod:`.records`, sample decoding in :mod:`.samples`, symbols in
:mod:`.symbolize`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import zstandard

from tracekit.errors import ParseError, TracekitError, TruncatedError, UnsupportedFormatError
from tracekit.model import LOST_SCHEMA, Trace
from tracekit.symbols import Kallsyms

from . import header as H
from . import layout as L
from . import records as R
from . import samples as S
from .symbolize import Symbolizer
from .symbolize import clear_caches as symbolize_clear

__all__ = ["sniff", "read", "clear_caches", "SAMPLE_SCHEMA"]

#: the common columns of every sample frame, in order; sample_type extras (addr, id, weight …) follow
SAMPLE_SCHEMA = {
    "ts": pl.Int64, "cpu": pl.Int32, "pid": pl.Int32, "tid": pl.Int32, "comm": pl.String, "period": pl.UInt64,
    "ip": pl.UInt64, "sym": pl.String, "dso": pl.String, "callchain": pl.List(pl.String),
    "callchain_ip": pl.List(pl.UInt64),
}


def sniff(head: bytes) -> bool:
    """True when ``head`` starts like perf.data (file or pipe header, either byte order)."""
    return head[:8] in (L.MAGIC, L.MAGIC_SWAPPED)


class _File:
    """A file read once into a numpy buffer followed by ``R._PAD`` zero bytes: large buffers get huge pages, and
    the record stream is a view of it (no second copy). Slices give bytes, for the header and feature parsers."""

    def __init__(self, path: Path):
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if stat.S_ISREG(st.st_mode):
                    buf = np.empty(st.st_size + R._PAD, dtype=np.uint8)
                    mv, n = memoryview(buf), 0
                    while n < st.st_size:
                        k = f.readinto(mv[n:st.st_size])
                        if not k:
                            break
                        n += k
                else:  # a pipe or device: no size to read into
                    raw = f.read()
                    n = len(raw)
                    buf = np.empty(n + R._PAD, dtype=np.uint8)
                    buf[:n] = np.frombuffer(raw, dtype=np.uint8)
        except OSError as exc:
            raise ParseError(path, None, "a readable file", exc.strerror) from exc
        buf[n:] = 0
        self.buf, self.n = buf, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k: slice) -> bytes:
        return bytes(memoryview(self.buf)[: self.n][k])

    def stream(self, start: int, end: int, path: Path, base: int, big: bool) -> R.Stream:
        """The records in ``[start, end)`` as a view; the padding after them is zeroed in place, so call this only
        once the bytes after ``end`` (feature sections) have been parsed."""
        end = max(start, min(end, self.n))
        self.buf[end:end + R._PAD] = 0
        return R.Stream(self.buf[start:end + R._PAD], os.fspath(path), base, big)


class _Reader:
    def __init__(self, path: Path, options: dict):
        self.path = path
        self.options = options
        self.attrs: list[H.Attr] = []
        self.metadata: dict = {}
        self.damage: list[ParseError] = []
        self.streams: list[tuple[R.Stream, np.ndarray, np.ndarray]] = []
        self.formats: dict = {}
        self.trace_kallsyms: Kallsyms | None = None
        self.event_names: dict[int, str] = {}  # id -> name (pipe mode EVENT_UPDATE)
        self.unknown_records = 0
        self.dctx = zstandard.ZstdDecompressor()

    # -- file header ------------------------------------------------------------------------------------------
    def open(self) -> None:
        p = self.path
        main = p / "data" if p.is_dir() else p
        data = _File(main)
        if len(data) < 16:
            raise TruncatedError(main, 0, "a perf.data header (16 bytes at least)", f"{len(data)} bytes")
        if data[:8] == L.MAGIC:
            big = False
        elif data[:8] == L.MAGIC_SWAPPED:
            big = True
        else:
            raise UnsupportedFormatError(main, f"not perf.data: magic {data[:8]!r}, expected b'PERFILE2'", 0)
        self.big = big
        self.metadata["byte_order"] = "big" if big else "little"
        hsize = int.from_bytes(data[8:16], "big" if big else "little")
        if hsize == L.perf_pipe_file_header.itemsize:
            self.metadata["pipe"] = True
            self._add_stream(data.stream(16, len(data), main, 16, big))
            self._pipe_headers()
            return
        self.metadata["pipe"] = False
        if hsize < L.perf_file_header.itemsize or len(data) < L.perf_file_header.itemsize:
            raise TruncatedError(main, 0, f"a perf_file_header of {L.perf_file_header.itemsize} bytes",
                                 f"size field {hsize}, file {len(data)} bytes")
        fh = np.frombuffer(data[: L.perf_file_header.itemsize], dtype=L.order(L.perf_file_header, big))[0]
        self._attrs(data, fh, main)
        self._features(data, fh, main)
        doff, dsize = int(fh["data"]["offset"]), int(fh["data"]["size"])
        if doff > len(data):
            raise TruncatedError(main, doff, f"the data section ({dsize} bytes)", f"file of {len(data)} bytes")
        if doff + dsize > len(data):
            self.damage.append(TruncatedError(main, len(data), f"the data section to end at {doff + dsize:#x}",
                                              f"end of file after {len(data) - doff} bytes"))
        if dsize == 0 and not p.is_dir():
            dsize = len(data) - doff  # perf died before writing the header back: take the rest
        self._add_stream(data.stream(doff, doff + dsize, main, doff, big))
        if p.is_dir():
            for f in sorted(p.glob("data.*"), key=lambda q: (len(q.name), q.name)):
                part = _File(f)
                self._add_stream(part.stream(0, len(part), f, 0, big))

    def _attrs(self, data: _File, fh, path: Path) -> None:
        attr_size = int(fh["attr_size"])
        off, size = int(fh["attrs"]["offset"]), int(fh["attrs"]["size"])
        if attr_size < L.ATTR_SIZE_VER0 + 16 or off + size > len(data) or size % attr_size:
            raise ParseError(path, 0x10, "attr_size >= 80 and an attrs section inside the file",
                             f"attr_size {attr_size}, attrs @{off:#x}+{size}")
        order = "big" if self.big else "little"
        for i in range(size // attr_size):
            a = off + i * attr_size
            raw = data[a:a + attr_size]
            attr = H.parse_attr(raw[: attr_size - 16], self.big)
            ids_off = int.from_bytes(raw[attr_size - 16:attr_size - 8], order)
            ids_size = int.from_bytes(raw[attr_size - 8:], order)
            if ids_off + ids_size > len(data):
                raise TruncatedError(path, a + attr_size - 16, f"{ids_size} bytes of ids at {ids_off:#x}",
                                     f"file of {len(data)} bytes")
            ids = np.frombuffer(data[ids_off:ids_off + ids_size // 8 * 8], dtype=">u8" if self.big else "<u8")
            self.attrs.append(H.Attr(attr, ids.tolist()))

    def _features(self, data: _File, fh, path: Path) -> None:
        bits = np.array(fh["adds_features"], dtype=np.uint64)
        present = [i for i in range(256) if int(bits[i // 64]) >> (i % 64) & 1]
        start = int(fh["data"]["offset"]) + int(fh["data"]["size"])
        sec_dt = L.order(L.perf_file_section, self.big)
        need = start + len(present) * sec_dt.itemsize
        if need > len(data):
            self.damage.append(TruncatedError(path, start, f"{len(present)} feature sections", "end of file"))
            return
        secs = np.frombuffer(data[start:need], dtype=sec_dt)
        for bit, sec in zip(present, secs, strict=True):
            name = L.FEATURES[bit] if bit < len(L.FEATURES) else f"feature_{bit}"
            off, size = int(sec["offset"]), int(sec["size"])
            if off + size > len(data):
                self.damage.append(TruncatedError(path, off, f"feature {name} ({size} bytes)", "end of file"))
                continue
            self._feature(name, data[off:off + size], off, path)

    def _feature(self, name: str, payload: bytes, off: int, path) -> None:
        try:
            if name == "tracing_data":
                self.formats, self.trace_kallsyms, info = H.parse_tracing_data(payload, off, path)
                self.metadata["tracing_data"] = info
                return
            self.metadata[name] = H.decode_feature(name, payload, off, path, self.big, self.metadata)
        except ParseError as exc:
            self.damage.append(exc)
        except (ValueError, IndexError) as exc:
            self.damage.append(ParseError(path, off, f"a well-formed feature {name}", str(exc)))

    # -- pipe mode --------------------------------------------------------------------------------------------
    def _pipe_headers(self) -> None:
        stream, pos, types = self.streams[0]
        order = "big" if self.big else "little"
        mv = stream.buf.data
        for p in pos[types >= 64].tolist():
            typ = int(stream.u32(np.array([p]))[0])
            size = int(stream.u16(np.array([p + 6]))[0])
            body = bytes(mv[p + 8:p + size])
            where = stream.where(p)
            if typ == L.T["HEADER_ATTR"]:
                asize = int.from_bytes(body[4:8], order) or L.ATTR_SIZE_VER0
                attr = H.parse_attr(body[:asize], self.big)
                ids = np.frombuffer(body[asize:asize + (len(body) - asize) // 8 * 8],
                                    dtype=">u8" if self.big else "<u8")
                self.attrs.append(H.Attr(attr, ids.tolist()))
            elif typ == L.T["HEADER_FEATURE"]:
                bit = int.from_bytes(body[:8], order)
                name = L.FEATURES[bit] if bit < len(L.FEATURES) else f"feature_{bit}"
                self._feature(name, body[8:], where + 16, stream.path)
            elif typ == L.T["HEADER_TRACING_DATA"]:
                n = int.from_bytes(body[:4], order)
                self._feature("tracing_data", bytes(mv[p + size:p + size + n]), where + size, stream.path)
            elif typ == L.T["EVENT_UPDATE"]:
                kind, ev_id = int.from_bytes(body[:8], order), int.from_bytes(body[8:16], order)
                if kind == 2:  # PERF_EVENT_UPDATE__NAME (0 UNIT, 1 SCALE, 3 CPUS)
                    self.event_names[ev_id] = body[16:].split(b"\0", 1)[0].decode("utf-8", "replace")

    # -- records ----------------------------------------------------------------------------------------------
    def _add_stream(self, stream: R.Stream) -> None:
        pos, dmg = R.walk(stream)
        if dmg is not None:
            self.damage.append(dmg)
        types = stream.u32(pos) if len(pos) else np.zeros(0, dtype=np.uint32)
        self.streams.append((stream, pos, types))
        inner = R.decompress(stream, pos, types, self.dctx, self.damage)
        if inner is not None:
            self._add_stream(inner)

    # -- names ------------------------------------------------------------------------------------------------
    def _name_attrs(self) -> None:
        descs = self.metadata.get("event_desc") or []
        by_id = {i: d["name"] for d in descs for i in d["ids"]}
        for k, a in enumerate(self.attrs):
            name = next((by_id[i] for i in a.ids if i in by_id), None)
            if name is None and k < len(descs) and not descs[k]["ids"]:
                name = descs[k]["name"]
            if name is None:
                name = next((self.event_names[i] for i in a.ids if i in self.event_names), None)
            if name is None and int(a.attr["type"]) == 2:  # PERF_TYPE_TRACEPOINT: config is the event id
                fmt = next((f for f in self.formats.values() if f.id == int(a.attr["config"])), None)
                name = fmt.full_name if fmt else None
            a.name = name or a.default_name()

    # -- samples ----------------------------------------------------------------------------------------------
    def _samples(self) -> dict[str, list[pl.DataFrame]]:
        id_to_attr: dict[int, int] = {}
        for k, a in enumerate(self.attrs):
            for i in a.ids:
                id_to_attr.setdefault(int(i), k)
        st0 = self.attrs[0].sample_type
        id_pos = S.id_position(st0)
        ids_sorted = np.array(sorted(id_to_attr), dtype=np.uint64)
        attr_of_sorted = np.array([id_to_attr[int(i)] for i in ids_sorted], dtype=np.int64)
        out: dict[str, list[pl.DataFrame]] = {}
        unknown = 0
        for stream, pos, types in self.streams:
            sp = pos[types == L.T["SAMPLE"]]
            if not len(sp):
                continue
            if len(self.attrs) == 1 or id_pos is None:
                which = np.zeros(len(sp), dtype=np.int64)
            else:
                sid = stream.u64(sp + 8 + id_pos)
                j = np.minimum(np.searchsorted(ids_sorted, sid), len(ids_sorted) - 1)
                hit = ids_sorted[j] == sid
                which = np.where(hit, attr_of_sorted[j], -1)
                unknown += int((~hit).sum())
            for k in np.unique(which[which >= 0]).tolist():
                df = self._decode(stream, sp[which == k], self.attrs[k])
                out.setdefault(self.attrs[k].name, []).append(df)
        self.metadata["samples_unknown_id"] = unknown
        return out

    def _decode(self, stream: R.Stream, pos: np.ndarray, attr: H.Attr) -> pl.DataFrame:
        cols, ok = S.decode(stream, pos, attr)
        if not ok.all():
            i = int(np.argmin(ok))
            self.damage.append(stream.error(int(pos[i]), f"a PERF_RECORD_SAMPLE whose fields fit its size "
                                                         f"({attr.name}; {int((~ok).sum())} such samples skipped)"))
        n = len(pos)
        frame: dict[str, object] = {}
        plain = {k: v for k, v in cols.items() if isinstance(v, np.ndarray)}
        for k in ("ts", "cpu", "pid", "tid"):
            if k in plain:
                frame[k] = plain.pop(k)
        if "period" in plain:
            frame["period"] = plain.pop("period")
        else:
            frame["period"] = np.full(n, int(attr.attr["sample_period"]) if not int(attr.attr["flags"]) & L.FLAG_FREQ
                                      else 0, dtype=np.uint64)
        frame["ip"] = plain.pop("ip") if "ip" in plain else np.zeros(n, dtype=np.uint64)
        frame["misc"] = stream.u16(pos + 4)
        frame.update(plain)
        if "callchain_raw" in cols:
            flat, offs = cols["callchain_raw"]
            frame["_cc"] = (flat, offs)  # context markers are stripped once per distinct stack (symbolize)
        if "read_values" in cols:
            v, o = cols["read_values"]
            frame["read_values"] = S.list_series("read_values", pl.Series(v, dtype=pl.UInt64), o)
        if "branch_stack" in cols:
            v, o = cols["branch_stack"]
            frame["branch_stack"] = S.list_series("branch_stack", pl.Series(v, dtype=pl.UInt64), o)
        raw = cols.get("raw")
        extra: dict[str, pl.Series] = {}
        if raw is not None:
            starts, sizes = raw
            fmt = None
            if int(attr.attr["type"]) == 2:
                fmt = next((f for f in self.formats.values() if f.id == int(attr.attr["config"])), None)
            if fmt is not None:
                long_size = self.metadata.get("tracing_data", {}).get("long_size", 8)
                extra = S.tracepoint_columns(stream, starts[ok], sizes[ok], fmt, long_size)
            else:
                mv = stream.buf.data
                extra = {"raw": pl.Series("raw", [bytes(mv[a:a + b]) for a, b in
                                                  zip(starts[ok].tolist(), sizes[ok].tolist(), strict=True)],
                                          dtype=pl.Binary)}
        return self._to_frame(frame, ok, extra, stream)

    def _to_frame(self, frame: dict, ok: np.ndarray, extra: dict, stream) -> pl.DataFrame:
        cc = frame.pop("_cc", None)
        whole = bool(ok.all())  # the usual case: nothing damaged, nothing to filter or copy
        cols = {}
        for k, v in frame.items():
            if whole:
                cols[k] = v
            elif isinstance(v, pl.Series):
                cols[k] = v.filter(pl.Series(ok))
            else:
                cols[k] = np.asarray(v)[ok]
        df = pl.DataFrame(cols)
        if cc is not None:
            ips, offs = cc
            counts = np.diff(offs)
            if not whole:
                ips = ips[np.repeat(ok, counts)]
                counts = counts[ok]
                offs = np.zeros(len(counts) + 1, dtype=np.int64)
                np.cumsum(counts, out=offs[1:])
            df = df.with_columns(pl.Series("_cc_n", counts))
            self._cc_parts.append((ips, offs))
            df = df.with_columns(pl.lit(len(self._cc_parts) - 1, dtype=pl.Int32).alias("_cc_part"))
        for k, v in extra.items():
            # a tracepoint field named like a sample column (sched_wakeup's pid, comm) is kept as tp_<name>
            name = f"tp_{k}" if k in SAMPLE_SCHEMA or k in df.columns else k
            df = df.with_columns(v.alias(name))
        return df

    def run(self, kallsyms, progress) -> Trace:
        self._cc_parts: list = []
        self.open()
        if progress:
            progress(1, 3)
        if not self.attrs:
            raise ParseError(self.path, 0, "at least one perf_event_attr", "none")
        self._name_attrs()
        per_event = self._samples()
        if progress:
            progress(2, 3)
        tables = self._tables()
        ksyms, ksrc = self._kallsyms(kallsyms)
        self.metadata["kallsyms_source"] = ksrc
        sym = Symbolizer(ksyms, tables, self.options.get("symfs"))
        # all events are symbolised together: their stacks overlap (cpu-clock and task-clock sample the same code)
        own: dict[str, list[str]] = {}
        tagged = []
        names = list(per_event)
        for code, (name, parts) in enumerate(per_event.items()):
            cols: list[str] = []
            for part in parts:
                cols += [c for c in part.columns if c not in cols]
                tagged.append(part.with_columns(pl.lit(code, dtype=pl.Int32).alias("_event")))
            own[name] = cols
        frames: dict[str, pl.DataFrame] = {}
        if tagged:
            merged = sym.finish(tagged, self._cc_parts, tables)
            made = ("comm", "sym", "dso", "callchain", "callchain_ip")
            runs = (merged.select("_event").with_row_index("_i").group_by("_event", maintain_order=True)
                    .agg(pl.col("_i").min().alias("start"), pl.len().alias("n")))
            for code, start, count in runs.iter_rows():  # each event is one contiguous, time-ordered run
                name = names[code]
                keep = [c for c in merged.columns if c in own[name] or c in made]
                frames[name] = merged.slice(start, count).select(keep)
            frames = {name: frames[name] for name in per_event if name in frames}
        self.metadata["callchains_dropped_invalid_context"] = sym.invalid_callchains
        lost = self._lost(tables)
        md = self.metadata
        md["attrs"] = [{"name": a.name, "ids": a.ids, **a.attr} for a in self.attrs]
        md["unknown_records"] = self.unknown_records
        md["version"] = md.get("version")
        md["clock"] = md.get("clock_data", {}).get("clock") or (H.CLOCK_NAMES.get(self.attrs[0].attr["clockid"])
                                                               if self.attrs[0].attr.get("use_clockid") else "perf")
        md["cpus"] = md.get("nrcpus", {}).get("online")
        md["uname"] = " ".join(str(md[k]) for k in ("hostname", "osrelease", "arch") if md.get(k))
        md["compression"] = md.get("compressed", {}).get("type")
        if progress:
            progress(3, 3)
        return Trace(source=os.fspath(self.path), format="perf.data", frames=frames, metadata=md,
                     formats=dict(self.formats), lost_events=lost, kallsyms=ksyms, damage=self.damage,
                     tables=tables, short_names=False)

    def _tables(self) -> dict[str, pl.DataFrame]:
        a0 = self.attrs[0]
        parts: dict[str, list[pl.DataFrame]] = {}
        known = set(L.RECORD_BODIES) | {L.T["SAMPLE"], L.T["COMPRESSED"], L.T["COMPRESSED2"]} | {
            L.T[k] for k in ("HEADER_ATTR", "HEADER_FEATURE", "HEADER_TRACING_DATA", "EVENT_UPDATE", "ID_INDEX",
                             "THREAD_MAP", "CPU_MAP", "STAT", "STAT_ROUND", "STAT_CONFIG", "HEADER_BUILD_ID",
                             "HEADER_EVENT_TYPE", "AUXTRACE_INFO", "AUXTRACE", "AUXTRACE_ERROR", "READ",
                             "NAMESPACES")}
        counts: dict[str, int] = {}
        for stream, pos, types in self.streams:
            for k, df in R.record_tables(stream, pos, types, a0.sample_type, a0.sample_id_all).items():
                parts.setdefault(k, []).append(df)
            u, c = np.unique(types, return_counts=True)
            for t, n in zip(u.tolist(), c.tolist(), strict=True):
                key = L.RECORD_TYPES.get(t, f"type_{t}")
                counts[key] = counts.get(key, 0) + n
                if t not in known:
                    self.unknown_records += n
        self.metadata["record_counts"] = counts
        return {k: pl.concat(v, how="diagonal_relaxed") for k, v in parts.items()}

    def _lost(self, tables: dict[str, pl.DataFrame]) -> pl.DataFrame:
        """Per-CPU losses: PERF_RECORD_LOST (ring buffer full) and kernel LOST_SAMPLES. The LOST_SAMPLES perf
        synthesises at the end of a run (time 0: each event's PERF_FORMAT_LOST total, which already counts the
        LOST records' samples) go to ``metadata["lost_samples_per_event"]`` instead, to count nothing twice."""
        rows = []
        lost = tables.get("lost")
        if lost is not None and lost.height:
            rows.append(lost.select((pl.col("cpu") if "cpu" in lost.columns else pl.lit(-1)).cast(pl.Int32)
                                    .alias("cpu"), pl.col("lost").cast(pl.Int64)))
        ls = tables.get("lost_samples")
        if ls is not None and ls.height:
            ts = pl.col("ts") if "ts" in ls.columns else pl.lit(1)
            synth = ls.filter(ts == 0)
            if synth.height and "id" in synth.columns:
                names = {i: a.name for a in self.attrs for i in a.ids}
                per: dict[str, int] = {}
                for i, n in synth.select("id", "lost").iter_rows():
                    per[names.get(i, str(i))] = per.get(names.get(i, str(i)), 0) + int(n)
                self.metadata["lost_samples_per_event"] = per
            real = ls.filter(ts != 0)
            if real.height:
                rows.append(real.select((pl.col("cpu") if "cpu" in real.columns else pl.lit(-1)).cast(pl.Int32)
                                        .alias("cpu"), pl.col("lost").cast(pl.Int64)))
        if not rows:
            return pl.DataFrame(schema=LOST_SCHEMA)
        return (pl.concat(rows).group_by("cpu").agg(pl.col("lost").sum())
                .with_columns(lost_unknown=pl.lit(0, dtype=pl.Int64)).sort("cpu").select(list(LOST_SCHEMA)))

    def _kallsyms(self, kallsyms) -> tuple[Kallsyms | None, str]:
        if isinstance(kallsyms, Kallsyms):
            return kallsyms, "given"
        if isinstance(kallsyms, Trace):  # a trace.dat loaded alongside carries the host's kallsyms
            if kallsyms.kallsyms is None:
                raise ParseError(kallsyms.source, None, "a trace carrying kallsyms", "none")
            return kallsyms.kallsyms, kallsyms.source
        if kallsyms is not None:
            with open(kallsyms, "rb") as f:
                magic = f.read(10)
            if magic == b"\x17\x08\x44tracing":
                from .. import tracedat

                return self._kallsyms(tracedat.read(kallsyms))[0], os.fspath(kallsyms)
            return Kallsyms.from_file(kallsyms), os.fspath(kallsyms)
        if self.trace_kallsyms is not None and len(self.trace_kallsyms):
            return self.trace_kallsyms, "tracing_data"
        try:
            uname = os.uname()
            if (self.metadata.get("hostname") == uname.nodename and self.metadata.get("osrelease") == uname.release
                    and os.access("/proc/kallsyms", os.R_OK)):
                ks = _proc_kallsyms()
                if len(ks) and ks.addrs[-1] != 0:
                    return ks, "/proc/kallsyms"
        except (OSError, TracekitError):
            pass
        return None, "none"


_PROC: dict[str, Kallsyms] = {}


def clear_caches() -> None:
    """Forget the parsed /proc/kallsyms and ELF symbol tables (benchmarks time cold reads with it)."""
    _PROC.clear()
    symbolize_clear()


def _proc_kallsyms() -> Kallsyms:
    """/proc/kallsyms, parsed once per boot of this machine."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            key = f.read().strip()
    except OSError:
        key = "?"
    if key not in _PROC:
        _PROC.clear()
        _PROC[key] = _parse_proc_kallsyms()
    return _PROC[key]


def _parse_proc_kallsyms() -> Kallsyms:
    """/proc/kallsyms (``ADDR TYPE NAME[\t[MODULE]]`` lines), split into columns by Polars' CSV reader."""
    with open("/proc/kallsyms", "rb") as f:
        data = f.read()
    if not data.strip():
        return Kallsyms(np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=object))
    g = pl.read_csv(data, separator=" ", has_header=False, quote_char=None, new_columns=["a", "t", "r"],
                    schema={"a": pl.String, "t": pl.String, "r": pl.String}, truncate_ragged_lines=True,
                    encoding="utf8-lossy")
    rest = g["r"].str.split_exact("\t", 1).struct.unnest()
    addrs = g["a"].str.to_integer(base=16, dtype=pl.UInt64, strict=False)
    ok = addrs.is_not_null() & rest["field_0"].is_not_null() & g["t"].is_not_null()
    mods = rest["field_1"].str.strip_chars("[] ").fill_null("")
    return Kallsyms(addrs.filter(ok).to_numpy(), rest["field_0"].filter(ok).to_numpy(),
                    g["t"].filter(ok).to_numpy(), mods.filter(ok).to_numpy())


def read(path: str | os.PathLike, *, kallsyms=None, progress: Callable[[int, int], None] | None = None,
         **options) -> Trace:
    """Read a perf.data file or ``--threads`` directory into a :class:`~tracekit.Trace`.

    Args:
        path: perf.data file (file or pipe mode) or a directory holding ``data`` and ``data.N``.
        kallsyms: kernel symbols for kernel addresses: a kallsyms text file, a trace.dat (or its loaded
            :class:`~tracekit.Trace`) recorded on the same host, or a :class:`~tracekit.symbols.Kallsyms`; by
            default the tracing data's, else ``/proc/kallsyms`` when hostname and osrelease match this machine.
            ``Trace.metadata["kallsyms_source"]`` says which was used (``none`` when no source fits).
        progress: called as ``progress(done, total)``.
        **options: ``symfs=DIR`` looks user binaries up under DIR.

    Returns:
        A Trace with ``format="perf.data"``: one frame per event name (``ts, cpu, pid, tid, comm, period, ip, sym,
        dso, callchain, callchain_ip`` and the other sample fields), ``tables`` for the other records,
        ``lost_events`` from LOST/LOST_SAMPLES, ``metadata`` with the header features.

    Raises:
        ParseError: the header or attrs are unreadable (damage further on is kept in ``Trace.damage``).
        UnsupportedFormatError: not perf.data.
    """
    p = Path(path)
    return _Reader(p, options).run(kallsyms, progress)
