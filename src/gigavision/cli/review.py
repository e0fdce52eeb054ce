"""``gigavision review`` (answer review tasks) and ``gigavision routing`` (where a model's predictions go)."""

from __future__ import annotations

import typer

review_app = typer.Typer(
    help="Review tasks: a model's uncertain proposals and selected items, for experts.", no_args_is_help=True
)
routing_app = typer.Typer(help="Routing policies: which stored predictions go to review.", no_args_is_help=True)
