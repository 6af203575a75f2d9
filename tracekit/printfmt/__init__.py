"""Event print formats: a pyparsing grammar of ``print fmt:``, its compilation to Polars expressions, rendering as
libtraceevent does, symbolic columns, and the inversion of rendered text back into fields.

Modules: :mod:`.grammar` (the grammar and AST), :mod:`.values` (libtraceevent's value rules and function map),
:mod:`.compile` (AST → Polars expressions), :mod:`.render` (``render_trace``, ``symbolic_columns``), :mod:`.invert`
(``info_parser``).
"""

from .grammar import PrintFmt, parse_conversions, parse_expr, parse_print_fmt
from .invert import info_parser
from .render import RENDER_SCHEMA, render_event, render_trace, symbolic_columns

__all__ = [
    "PrintFmt", "parse_print_fmt", "parse_expr", "parse_conversions", "render_trace", "render_event",
    "symbolic_columns", "info_parser", "RENDER_SCHEMA",
]
