"""The ``tracekit`` command line. The only module that imports typer and rich.

Exit codes: 0 ok, 1 findings at or above ``--fail-on``, 2 bad input or usage (one line on stderr, no traceback).
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .api import load
from .errors import ConfigError, TracekitError

app = typer.Typer(add_completion=True, no_args_is_help=True, help="Why does this VM's PMU misbehave? Read host "
                  "traces and perf data, flag double PMIs per VM-exit and perf_event_ctx_lock hotspots.")
console = Console()
err = Console(stderr=True)


def _fail(exc: BaseException) -> None:
    err.print(f"tracekit: error: {exc}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def load_with_progress(path: Path, **options):
    """Load ``path`` with a rich progress bar (shown only when the input is big and stderr a terminal)."""
    size = path.stat().st_size if path.is_file() else 0
    if size < 16 << 20 or not err.is_terminal:
        return load(path, **options)
    with Progress(TextColumn("reading {task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task(path.name, total=size)
        return load(path, progress=lambda done, total: bar.update(task, completed=done, total=total), **options)


def _print_version(value: bool) -> None:
    if value:
        console.print(f"tracekit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                       callback=_print_version)) -> None:
    """Why does this VM's PMU misbehave?"""


@app.command()
def info(path: Path = typer.Argument(..., help="trace.dat, perf.data, perf script or ftrace text"),
         buffer: str | None = typer.Option(None, help="read only this buffer/instance of a trace.dat")) -> None:
    """Print format, version, compression, kernel, clock, CPUs, duration, events per type and lost events."""
    try:
        opts = {"buffer": buffer} if buffer is not None else {}
        tr = load_with_progress(path, **opts)
        s = tr.summary()
        counts = tr.counts()
    except TracekitError as exc:
        _fail(exc)
    t = Table(show_header=False, box=None)
    for k in ("path", "format", "version", "compression", "uname", "clock", "cpus", "duration_s", "events",
              "lost_events"):
        v = s.get(k)
        if k == "duration_s" and v is not None:
            v = f"{v:.6f} s"
        t.add_row(k, "" if v is None else str(v))
    console.print(t)
    ct = Table("event", "count")
    for ev, n in counts.iter_rows():
        ct.add_row(ev, str(n))
    console.print(ct)
    for d in s["damage"]:
        err.print(f"damage: {d}", markup=False, highlight=False)


@app.command()
def events(path: Path = typer.Argument(...), event: str = typer.Argument(..., help="event or system:event"),
           output: Path = typer.Option(..., "-o", "--output", help="out.parquet or out.csv"),
           symbolic: bool = typer.Option(False, help="add <field>_name columns from the print fmt")) -> None:
    """Export one event's frame as Parquet or CSV."""
    try:
        tr = load_with_progress(path)
        df = tr.events(event, symbolic=symbolic)
        if output.suffix == ".csv":
            nested = [c for c, t in df.schema.items() if t.is_nested()]
            df.with_columns([pl.col(c).list.eval(pl.element().cast(pl.String)).list.join(" ") for c in nested]
                            ).write_csv(output)
        elif output.suffix == ".parquet":
            df.write_parquet(output)
        else:
            raise typer.BadParameter("output must end in .parquet or .csv")
    except TracekitError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(exc)
    console.print(f"{df.height} rows → {output}")


FAIL_ON = ("info", "warning", "error")
_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
#: flagged VM-exits printed by ``analyze``; all of them are in report.html and findings.json
_LISTED_EXITS = 20


def bundled_sample() -> Path:
    """The sample ``tracekit analyze`` reads when given no input: ``samples/kvm-double-pmi.dat`` of the checkout,
    else the copy shipped as package data.

    Raises:
        ConfigError: neither exists.
    """
    import tracekit

    here = Path(tracekit.__file__).resolve().parent
    for cand in (here.parent / "samples" / "kvm-double-pmi.dat", here / "data" / "samples" / "kvm-double-pmi.dat"):
        if cand.is_file():
            return cand
    raise ConfigError("no input given and the bundled sample samples/kvm-double-pmi.dat is not installed")


def _analysis_progress(paths: list[Path]):
    """A rich progress context and callback for :func:`tracekit.analyze`, or (None, None) for small inputs or when
    stderr is not a terminal."""
    size = sum(p.stat().st_size if p.is_file() else 0 for p in paths)
    if size < 4 << 20 or not err.is_terminal:  # a 4 MiB zstd trace.dat already holds ~1M events
        return None, None
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
                   TimeRemainingColumn(), console=err, transient=True)
    tasks: dict[str, int] = {}

    def cb(step: str, done: int, total: int) -> None:
        key = "rules" if step.startswith("rule ") else step if step.startswith("reading ") else "inputs"
        if key not in tasks:
            tasks[key] = bar.add_task(step, total=total)
        bar.update(tasks[key], completed=done, total=total, description=step)

    return bar, cb


def _summary(result, written: dict[str, Path]) -> None:
    t = Table("severity", "rule", "finding", "count", title="tracekit analyze")
    for f in result.finding_objects:
        t.add_row(f"[{_SEVERITY_STYLE.get(f.severity, '')}]{f.severity}[/]", escape(f.rule), escape(f.title),
                  f"{int(f.count):,}")
    if not result.finding_objects:
        t.add_row("—", "—", "no findings", "0")
    console.print(t)
    _flagged_exits(result.multi_pmi_exits)
    for name, r in sorted(result.results.items()):
        if not r.ran:
            why = "; ".join(r.notes) or ("missing " + ", ".join(r.missing) if r.missing else "could not run")
            console.print(f"[dim]rule {escape(name)} did not run: {escape(why)}[/]", highlight=False)
    for key in ("html", "json"):
        if key in written:
            console.print(f"{key}: {escape(str(written[key]))}", highlight=False)
    pngs = [p for k, p in written.items() if k not in ("html", "json")]
    if pngs:
        console.print(f"charts: {len(pngs)} PNG in {escape(str(pngs[0].parent))}", highlight=False)


def _flagged_exits(flagged) -> None:
    """Print the first flagged VM-exits (time order) so the terminal answers "which exits?" without the report."""
    if flagged.height == 0:
        return
    t = Table(title=f"VM-exits with more than one PMI ({flagged.height:,})", box=box.SIMPLE_HEAD,
              padding=(0, 1), pad_edge=False)
    for col in ("exit (s)", "pid", "vcpu", "cpu", "reason", "µs", "PMIs"):
        t.add_column(col, no_wrap=True)
    t.add_column("seen through")
    for r in flagged.sort("exit_ts").head(_LISTED_EXITS).iter_rows(named=True):
        took = "—" if r["entry_ts"] is None else f"{(r['entry_ts'] - r['exit_ts']) / 1e3:.1f}"
        t.add_row(f"{r['exit_ts'] / 1e9:.6f}", str(r["pid"]), str(r["vcpu"]), str(r["cpu"]),
                  escape(str(r["exit_reason"])), took, str(r["pmi_count"]), escape(", ".join(r["sources"] or [])))
    console.print(t)
    if flagged.height > _LISTED_EXITS:
        console.print(f"… and {flagged.height - _LISTED_EXITS:,} more in report.html / findings.json", highlight=False)


@app.command()
def analyze(paths: list[Path] | None = typer.Argument(None, help="host inputs: trace.dat, ftrace text, perf.data, "
                                                      "perf script (default: the bundled sample)"),
            guest: list[Path] = typer.Option([], "--guest", help="guest-side input (e.g. the guest's perf.data)"),
            output: Path = typer.Option(Path("tracekit-report"), "-o", "--output", help="report directory"),
            rules: Path | None = typer.Option(None, "--rules", help="TOML rules file (on/off and thresholds)"),
            only: list[str] = typer.Option([], "--only", help="run only this rule (repeatable)"),
            fail_on: str | None = typer.Option(None, "--fail-on", help="exit 1 when a finding is at least this "
                                               "severe: warning or error"),
            json_only: bool = typer.Option(False, "--json-only", help="write only findings.json")) -> None:
    """Run every rule; write DIR/report.html, DIR/*.png and DIR/findings.json; print a summary.

    Exit status: 0 ok, 1 a finding at or above --fail-on, 2 bad input or usage.
    """
    from .analysis import analyze as run_analysis

    try:
        if fail_on is not None and fail_on not in FAIL_ON:
            raise ConfigError(f"--fail-on must be one of {', '.join(FAIL_ON)}, not {fail_on!r}")
        inputs = list(paths or []) or [bundled_sample()]
        bar, cb = _analysis_progress(inputs + list(guest))
        if bar is None:
            result = run_analysis(inputs, guest=guest, only=only or None, config=rules)
        else:
            with bar:
                result = run_analysis(inputs, guest=guest, only=only or None, config=rules, progress=cb)
        written = result.save(output, json_only=json_only)
    except TracekitError as exc:
        _fail(exc)
    _summary(result, written)
    worst = result.max_severity()
    if fail_on is not None and worst is not None and FAIL_ON.index(worst) >= FAIL_ON.index(fail_on):
        raise typer.Exit(1)


@app.command()
def detectors() -> None:
    """List the rules: what each looks for, the events it needs, and how to record them."""
    df = _describe()
    t = Table("rule", "description", "needs", "defaults", title="tracekit detectors", show_lines=True)
    for r in df.iter_rows(named=True):
        t.add_row(escape(r["name"]), escape(r["description"] or ""), escape(r["requires"] or ""),
                  escape(r["defaults"] or ""))
    console.print(t)
    for r in df.iter_rows(named=True):
        if r["record_hint"]:
            console.print(f"[bold]{escape(r['name'])}[/] records with:", highlight=False)
            console.print(r["record_hint"], markup=False, highlight=False, soft_wrap=True)


def _describe() -> pl.DataFrame:
    """name, description, requires, record_hint, defaults (strings) of every registered rule."""
    from . import detectors as det

    fn = getattr(det, "describe", None)
    if fn is None:
        try:
            from .detectors.describe import describe as fn
        except ImportError:
            fn = None
    df = fn() if fn is not None else None
    if df is None:
        rows = []
        for name, cls in sorted(det.registry().items()):
            needs = list(getattr(cls, "requires", ()))
            needs += [" | ".join(g) for g in getattr(cls, "requires_any", ())]
            rows.append({"name": name, "description": getattr(cls, "description", ""), "requires": needs,
                         "record_hint": getattr(cls, "record_hint", ""), "defaults": getattr(cls, "defaults", {})})
        df = pl.DataFrame(rows, schema={"name": pl.String, "description": pl.String, "requires": pl.Object,
                                        "record_hint": pl.String, "defaults": pl.Object}) if rows else None
    cols = ("name", "description", "requires", "record_hint", "defaults")
    if df is None or df.is_empty():
        return pl.DataFrame(schema=dict.fromkeys(cols, pl.String))

    def text(v) -> str:
        if v is None:
            return ""
        if isinstance(v, dict):
            return ", ".join(f"{k}={v[k]!r}" for k in v)
        if isinstance(v, (list, tuple, pl.Series)):
            return ", ".join(str(x) for x in v)
        return str(v)

    return pl.DataFrame([{c: text(r.get(c)) for c in cols} for r in df.to_dicts()],
                        schema=dict.fromkeys(cols, pl.String))


@app.command()
def convert(path: Path = typer.Argument(..., help="trace.dat, perf.data, perf script or ftrace text"),
            output: Path = typer.Option(..., "-o", "--output", help="directory for the Parquet files"),
            force: bool = typer.Option(False, "--force", help="replace OUTPUT when it holds a dataset"),
            stream: bool = typer.Option(False, "--stream", help="trace.dat: read in batches of pages (bounded "
                                        "memory); each event becomes DIR/<system>/<event>/part-N.parquet")) -> None:
    """Write one Parquet file per event (DIR/<system>/<event>.parquet, rows in ts order, bounded row groups),
    DIR/metadata.json (what `tracekit info` shows, lost events per CPU) and DIR/tracekit.json, the manifest
    `tracekit.load(DIR)` reads back lazily."""
    import json

    from .stream import convert as run_convert

    try:
        tr = None if stream else load_with_progress(path)
        run_convert(path if stream else tr, output, overwrite=force, stream=stream)
        meta = json.loads((output / "metadata.json").read_text())
    except TracekitError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(ConfigError(f"{output}: cannot write: {exc.strerror or exc}"))
    nev = len(json.loads((output / "tracekit.json").read_text())["events"])
    console.print(f"{nev} events, {meta['events']:,} rows → {escape(str(output))}", highlight=False)


@app.command("analyze-fleet")
def analyze_fleet(inputs: list[str] = typer.Argument(..., help="trace paths or a glob such as 'hosts/*/trace.dat'"),
                  output: Path = typer.Option(..., "-o", "--output", help="fleet report directory"),
                  scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler address "
                                                       "(tcp://host:8786); default: a local cluster"),
                  workers: int | None = typer.Option(None, "--workers", help="worker processes of the local "
                                                     "cluster (default: CPU count, at least 2)"),
                  host_from: str = typer.Option("uname", "--host-from", help="name hosts by the trace's uname, "
                                                "the file's parent directory (parent) or its stem"),
                  rules: Path | None = typer.Option(None, "--rules", help="TOML rules file")) -> None:
    """Convert and analyse every trace as a task on a Dask cluster; write DIR/findings.json and DIR/report.html
    (per host and per trace, worst first: double-PMI exit rate, mutex hotspot share)."""
    from .fleet import analyze_fleet as run_fleet

    try:
        res = run_fleet(inputs if len(inputs) > 1 else inputs[0], output, scheduler=scheduler, workers=workers,
                        config=rules, host_from=host_from)
    except TracekitError as exc:
        _fail(exc)
    t = Table("host", "traces", "failed", "worst", "exits", "double-PMI exits", "rate", "hotspot share",
              title=f"tracekit fleet ({res.workers} workers)")
    for r in res.hosts.iter_rows(named=True):
        rate = "" if r["double_pmi_rate"] is None else f"{r['double_pmi_rate']:.3%}"
        share = "" if r["hotspot_share"] is None else f"{r['hotspot_share']:.1%}"
        t.add_row(escape(r["host"] or ""), str(r["traces"]), str(r["failed"]), escape(r["max_severity"] or ""),
                  str(r["exits"] or 0), str(r["double_pmi_exits"] or 0), rate, share)
    console.print(t)
    console.print(f"report: {escape(str(output / 'report.html'))}", highlight=False)


def main() -> None:
    """Console-script entry point: usage and input errors exit 2 with one line, never a traceback."""
    try:  # typer >= 0.20 vendors click as typer._click; older typer uses click itself
        from typer import _click as click
    except ImportError:  # pragma: no cover
        import click

    try:
        code = app(standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        err.print(exc.format_message(), markup=False, highlight=False)
        sys.exit(2)
    except click.exceptions.UsageError as exc:
        err.print(f"tracekit: error: {exc.format_message()}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except click.exceptions.ClickException as exc:
        err.print(f"tracekit: error: {exc.format_message()}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("tracekit: aborted", markup=False, highlight=False)
        sys.exit(130)
    except TracekitError as exc:  # pragma: no cover - commands catch their own
        err.print(f"tracekit: error: {exc}", markup=False, highlight=False)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
