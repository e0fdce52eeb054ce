"""The command line: a Typer app (main.py) and one module per command group."""
