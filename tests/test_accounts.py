"""``flask --app ingestapp users|tokens ...`` and ``ingest run --user``: the contract commands as
outside checks run them (real subprocesses on a real instance directory), the rest through Flask's
CLI runner (the same click commands in-process: each subprocess costs a full app start)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from flask import Flask
from sqlalchemy import select

from ingestapp import create_app, shutdown
from ingestapp.accounts.users import authenticate, find_user
from ingestapp.store.models import IngestSession
from tests.factories import write_jpegs

REPO = Path(__file__).resolve().parents[1]
FLASK = Path(sys.executable).with_name("flask")


def flask(instance: Path, media: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "INGEST_INSTANCE_PATH": str(instance), "INGEST_MEDIA_ROOTS": str(media)}
    return subprocess.run(
        [str(FLASK), "--app", "ingestapp", *args], input=stdin, capture_output=True, text=True, cwd=REPO, env=env,
        timeout=120,
    )


def invoke(app: Flask, *args: str, stdin: str | None = None):
    return app.test_cli_runner().invoke(args=list(args), input=stdin)


def test_users_and_tokens_commands(tmp_path: Path, media: Path) -> None:
    """The commands through the real ``flask`` entry point where it matters (the first start's
    setup link on a fresh instance; a revocation reaching another process), the rest in-process
    (a ``flask`` process costs seconds to start)."""
    instance = tmp_path / "instance"
    link = flask(instance, media, "users", "setup-link")
    assert link.returncode == 0 and re.search(r"http://\S+/setup\?token=[\w-]{40,}", link.stdout), link.stdout

    app = create_app({"TESTING": True, "INSTANCE_PATH": instance, "MEDIA_ROOTS": [media]})
    try:
        engine = app.extensions["ingest_db"]
        created = invoke(app, "users", "create", "alice", "--admin", "--password-stdin", stdin="alice-pw-1\n")
        assert created.exit_code == 0, created.output
        assert not (instance / "setup-token").exists()  # the first user ends the setup link
        assert invoke(app, "users", "create", "bob", "--password-stdin", stdin="bob-pw-123\n").exit_code == 0
        listing = invoke(app, "users", "list").output
        assert re.search(r"^\d+\talice\tadmin\t", listing, re.M) and re.search(r"^\d+\tbob\tuser\t", listing, re.M)

        created = invoke(app, "tokens", "create", "bob", "--name", "laptop", "--expires-days", "30")
        assert created.exit_code == 0, created.output
        token = created.output.splitlines()[-1]
        assert re.fullmatch(r"ingest_[\w-]{40,}", token)
        token_id = int(re.search(r"token (\d+)", created.output).group(1))

        assert invoke(app, "users", "setup-link").output == ""  # a user exists: no link
        taken = invoke(app, "users", "create", "bob", "--password-stdin", stdin="bob-pw-123\n")
        assert taken.exit_code == 1 and "already exists" in taken.output
        short = invoke(app, "users", "create", "carol", "--password-stdin", stdin="short\n")
        assert short.exit_code == 1 and "at least 8" in short.output
        assert invoke(app, "users", "create", "no good", "--password-stdin", stdin="long-enough\n").exit_code == 1

        bob = app.test_client(token=token)
        assert bob.get("/api/ingest/sessions").status_code == 200
        tokens = invoke(app, "tokens", "list").output
        assert "laptop" in tokens and token not in tokens and "last_used=-" not in tokens  # its use was noted
        assert flask(instance, media, "tokens", "revoke", str(token_id)).returncode == 0
        assert bob.get("/api/ingest/sessions").status_code == 401
        assert re.search(r"revoked=\d{4}-", invoke(app, "tokens", "list").output)
        assert invoke(app, "tokens", "revoke", "999").exit_code == 1

        assert invoke(app, "users", "set-password", "bob", "--password-stdin", stdin="new-bob-pw\n").exit_code == 0
        assert authenticate(engine, "bob", "new-bob-pw") and not authenticate(engine, "bob", "bob-pw-123")
        assert invoke(app, "users", "set-password", "nobody", "--password-stdin", stdin="long-enough\n").exit_code == 1

        assert invoke(app, "users", "delete", "bob").exit_code == 0
        assert "bob" not in invoke(app, "users", "list").output and find_user(engine, username="bob") is None
        assert invoke(app, "users", "delete", "bob").exit_code == 1
    finally:
        shutdown(app)


def test_ingest_run_acts_as_a_user(tmp_path: Path, media: Path) -> None:
    instance = tmp_path / "instance"
    write_jpegs(media, 1)
    run = ("ingest", "run", str(media), "--no-nsfw", "--json")
    app = create_app({"TESTING": True, "INSTANCE_PATH": instance, "MEDIA_ROOTS": [media]})
    try:
        nobody = invoke(app, *run)
        assert nobody.exit_code == 2 and "no admin user exists" in nobody.output
        for name in ("root", "other"):
            invoke(app, "users", "create", name, "--admin", "--password-stdin", stdin="long-enough\n")
        ambiguous = invoke(app, *run)
        assert ambiguous.exit_code == 2 and "--user" in ambiguous.output
        assert invoke(app, *run, "--user", "ghost").exit_code == 2
    finally:
        shutdown(app)
    done = flask(instance, media, *run, "--user", "other")  # as an outside check would
    assert done.returncode == 0, done.stderr
    session_id = json.loads(done.stdout)["session_id"]
    app = create_app({"TESTING": True, "INSTANCE_PATH": instance, "MEDIA_ROOTS": [media]})
    try:
        with app.extensions["ingest_db"].connect() as conn:
            owner = conn.scalar(select(IngestSession.user_id).where(IngestSession.id == session_id))
        assert owner == find_user(app.extensions["ingest_db"], username="other").id
    finally:
        shutdown(app)
