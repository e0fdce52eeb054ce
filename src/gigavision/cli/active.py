"""``gigavision active``: active learning (select what to label next) and label-error finding."""

from __future__ import annotations

import typer

active_app = typer.Typer(
    help="Active learning: choose what experts label next; find wrong labels.", no_args_is_help=True
)
