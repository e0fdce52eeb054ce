"""``gigavision users ...``: accounts and API tokens of a workspace (see docs/server.md, Accounts and roles).

Passwords are read from stdin (``--password-stdin``) or prompted for without echo, never taken from the
command line (where ``ps`` and shell history would show them). Token secrets are printed once.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from gigavision.cli.common import JsonOpt, WorkspaceOpt, err_console, open_ws, out_console, print_json
from gigavision.errors import InvalidInput
from gigavision.store.roles import ROLES

if TYPE_CHECKING:
    from gigavision.store.users import Accounts
    from gigavision.workspace import Workspace

users_app = typer.Typer(
    help=f"User accounts and API tokens. Roles: {', '.join(ROLES)}. The first user turns logins on.",
    no_args_is_help=True,
)


def _accounts(ws: Workspace) -> Accounts:
    from gigavision.store.users import Accounts  # SQLAlchemy and argon2: only when a command runs

    return Accounts(ws.session)


RoleArg = Annotated[str, typer.Argument(help=f"One of: {', '.join(ROLES)}.")]


def read_password(from_stdin: bool) -> str:
    """A password from the first line of stdin, or prompted for twice without echo."""
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        if password.endswith("\r"):
            password = password[:-1]
        if not password:
            raise InvalidInput("--password-stdin: no password on stdin")
        return password
    first: str = typer.prompt("Password", hide_input=True)
    second: str = typer.prompt("Repeat it", hide_input=True)
    if first != second:
        raise InvalidInput("the two passwords differ")
    return first


@users_app.command("add")
def add_cmd(
    name: str,
    role: Annotated[str, typer.Option("--role", help=f"One of: {', '.join(ROLES)}.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
    ] = False,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Add a user; the first one makes the server require logins (make it an admin)."""
    password = read_password(password_stdin)
    with open_ws(workspace_opt) as ws:
        user = _accounts(ws).add(name, role, password)
    if json_out:
        print_json(user.as_dict())
    else:
        err_console.print(f"user {user.name} added ({user.role})")


@users_app.command("list")
def list_cmd(workspace_opt: WorkspaceOpt = None, json_out: JsonOpt = False) -> None:
    """Users with their role, state and live API tokens."""
    with open_ws(workspace_opt) as ws:
        accounts = _accounts(ws)
        users, tokens = accounts.users(), accounts.tokens()
    if json_out:
        print_json(
            {"users": [{**u.as_dict(), "tokens": [t.as_dict() for t in tokens if t.user == u.name]} for u in users]}
        )
        return
    table = Table("name", "role", "state", "created", "tokens")
    for u in users:
        live = [f"{t.name} ({t.role})" for t in tokens if t.user == u.name and not t.revoked]
        table.add_row(
            u.name, u.role, "disabled" if u.disabled else "active", u.created_at.isoformat()[:19], ", ".join(live)
        )
    out_console.print(table)


@users_app.command("set-role")
def set_role_cmd(name: str, role: RoleArg, workspace_opt: WorkspaceOpt = None) -> None:
    """Change a user's role (their tokens never allow more than the role does)."""
    with open_ws(workspace_opt) as ws:
        user = _accounts(ws).set_role(name, role)
    err_console.print(f"user {user.name} is now {user.role}")


@users_app.command("set-password")
def set_password_cmd(
    name: str,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read it from stdin.")] = False,
    workspace_opt: WorkspaceOpt = None,
) -> None:
    """Set a user's password."""
    password = read_password(password_stdin)
    with open_ws(workspace_opt) as ws:
        _accounts(ws).set_password(name, password)
    err_console.print(f"password of {name} set")


@users_app.command("disable")
def disable_cmd(name: str, workspace_opt: WorkspaceOpt = None) -> None:
    """Disable a user: logins end now, tokens stop working; what they did keeps their name."""
    with open_ws(workspace_opt) as ws:
        _accounts(ws).disable(name)
    err_console.print(f"user {name} disabled")


@users_app.command("token")
def token_cmd(
    user: str,
    name: Annotated[str, typer.Option("--name", help="What the token is for (unique per user).")],
    role: Annotated[str | None, typer.Option("--role", help="Default: the user's role; never more.")] = None,
    expires_days: Annotated[float | None, typer.Option("--expires-days", help="Default: never expires.")] = None,
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Make an API token (``Authorization: Bearer SECRET``); the secret is printed once, on stdout."""
    with open_ws(workspace_opt) as ws:
        secret, token = _accounts(ws).add_token(user, name, role, expires_days)
    if json_out:
        print_json({**token.as_dict(), "secret": secret})
        return
    typer.echo(secret)
    until = "never expires" if token.expires_at is None else f"expires {token.expires_at.isoformat()[:19]}"
    err_console.print(f"token {token.name} of {user} ({token.role}, {until}): shown once, keep it secret")


@users_app.command("revoke-token")
def revoke_token_cmd(
    user: str,
    name: Annotated[str, typer.Option("--name", help="The token's name.")],
    workspace_opt: WorkspaceOpt = None,
) -> None:
    """Revoke a user's token: it stops working at once."""
    with open_ws(workspace_opt) as ws:
        _accounts(ws).revoke_token(user, name)
    err_console.print(f"token {name} of {user} revoked")
