"""``flask --app ingestapp users|tokens ...``: manage user accounts and API tokens."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import Engine

from ingestapp.accounts.users import (
    AccountError,
    check_username,
    create_token,
    create_user,
    delete_user,
    find_user,
    finish_setup,
    list_tokens,
    list_users,
    revoke_token,
    set_password,
    setup_token,
)

users = AppGroup("users", help="Manage user accounts.")
tokens = AppGroup("tokens", help="Manage API tokens (Authorization: Bearer).")


def _engine() -> Engine:
    return current_app.extensions["ingest_db"]


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


def _fail(exc: AccountError) -> click.ClickException:
    return click.ClickException(exc.message)


def _when(timestamp: float | None) -> str:
    return "-" if timestamp is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


@users.command("create")
@click.argument("username")
@click.option("--admin", is_flag=True, help="Make the user an admin (sees and controls every session).")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
def users_create(username: str, admin: bool, password_stdin: bool) -> None:
    """Create user USERNAME (prompts for the password unless --password-stdin)."""
    try:
        check_username(username)  # before the password prompt, not after it
        create_user(_engine(), username, _read_password(password_stdin), admin)
    except AccountError as exc:
        raise _fail(exc) from None
    finish_setup(Path(current_app.instance_path))
    click.echo(f"created {'admin' if admin else 'user'} {username}")


@users.command("list")
def users_list() -> None:
    """List users: id, name, role, active tokens, created."""
    for user in list_users(_engine()):
        role = "admin" if user["is_admin"] else "user"
        click.echo(f"{user['id']}\t{user['username']}\t{role}\ttokens={user['tokens']}\t{_when(user['created_at'])}")


@users.command("delete")
@click.argument("username")
def users_delete(username: str) -> None:
    """Delete user USERNAME and their tokens (their sessions stay, for admins)."""
    try:
        delete_user(_engine(), username)
    except AccountError as exc:
        raise _fail(exc) from None
    click.echo(f"deleted user {username}")


@users.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
def users_set_password(username: str, password_stdin: bool) -> None:
    """Set the password of USERNAME (prompts unless --password-stdin)."""
    try:
        if find_user(_engine(), username=username) is None:
            raise AccountError(f"no user {username!r}", "username")
        set_password(_engine(), username, _read_password(password_stdin))
    except AccountError as exc:
        raise _fail(exc) from None
    click.echo(f"password of {username} changed")


@users.command("setup-link")
def users_setup_link() -> None:
    """Print the one-time link that creates the first admin (only while no user exists)."""
    token = setup_token(Path(current_app.instance_path), _engine())
    if token is None:
        return
    bind = os.environ.get("INGEST_BIND", "127.0.0.1:8000")
    click.echo(f"ingestapp: no user yet. Create the first admin at http://{bind}/setup?token={token}")
    click.echo("  (or: flask --app ingestapp users create NAME --admin)")


@tokens.command("create")
@click.argument("username")
@click.option("--name", default="", help="A label, e.g. where the token is used.")
@click.option("--expires-days", type=float, help="Days until the token stops working (default: never).")
def tokens_create(username: str, name: str, expires_days: float | None) -> None:
    """Create an API token for USERNAME; the token alone is the last line printed (shown once)."""
    try:
        token_id, token = create_token(_engine(), username, name, expires_days)
    except AccountError as exc:
        raise _fail(exc) from None
    click.echo(f"token {token_id} for {username} (send it as 'Authorization: Bearer <token>'; it is not shown again):")
    click.echo(token)


@tokens.command("list")
def tokens_list() -> None:
    """List tokens: id, user, label, created, expires, revoked, last used (never the token)."""
    for t in list_tokens(_engine()):
        click.echo(
            f"{t['id']}\t{t['username']}\t{t['name'] or '-'}\tcreated={_when(t['created_at'])}\t"
            f"expires={_when(t['expires_at'])}\trevoked={_when(t['revoked_at'])}\tlast_used={_when(t['last_used_at'])}"
        )


@tokens.command("revoke")
@click.argument("token_id", metavar="ID", type=int)
def tokens_revoke(token_id: int) -> None:
    """Revoke token ID at once."""
    try:
        revoke_token(_engine(), token_id)
    except AccountError as exc:
        raise _fail(exc) from None
    click.echo(f"revoked token {token_id}")
