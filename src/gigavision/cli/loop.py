"""``gigavision loop``: retraining loops that train on new labels and promote the better model."""

from __future__ import annotations

import typer

loop_app = typer.Typer(
    help="Retraining loops: new labels -> next dataset version -> train -> compare -> promote.", no_args_is_help=True
)
