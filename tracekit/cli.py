"""The ``tracekit`` command line. The only module that imports typer and rich.

Exit codes: 0 ok, 1 findings at or above ``--fail-on``, 2 bad input or usage (one line on stderr, no traceback).
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .api import load
from .errors import TracekitError

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


@app.callback()
def _main(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        console.print(f"tracekit {__version__}")
        raise typer.Exit(0)


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


def main() -> None:
    """Console-script entry point: usage and input errors exit 2 with one line, never a traceback."""
    try:
        app()
    except TracekitError as exc:  # pragma: no cover - commands catch their own
        err.print(f"tracekit: error: {exc}", markup=False, highlight=False)
        sys.exit(2)
