"""``flask --app ingestapp ingest ...``: run an ingest in the terminal, write sample media; and the
registration of every command group (``ingest``, ``worker``, ``users``, ``tokens``).

A new ``ingest`` subcommand is one more ``@ingest.command(...)`` function (here or in a module this
one imports)."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
import gevent
from flask import Flask, current_app
from flask.cli import AppGroup
from tqdm import tqdm

from ingestapp.accounts.users import AccountError, default_cli_user
from ingestapp.catalog.commit import commit_session
from ingestapp.cli import accounts
from ingestapp.core.parameters import ParameterError, parse_parameters
from ingestapp.core.paths import printable
from ingestapp.core.vocabulary import EventType, SessionStatus
from ingestapp.events.model import Event, job_event
from ingestapp.jobs.registry import JobRegistry
from ingestapp.store.revision import SchemaOutOfDate, require_current

ingest = AppGroup("ingest", help="Ingest media from the command line.")


def init_app(app: Flask) -> None:
    for command in (ingest, worker_command, accounts.users, accounts.tokens):
        app.cli.add_command(command)


class ProgressBar:
    """A tqdm bar on stderr fed by the session's ``job-event`` signals."""

    def __init__(self, session_id: str, enabled: bool) -> None:
        self.session_id = session_id
        self.bar = tqdm(total=0, unit="file", disable=not enabled, dynamic_ncols=True)
        job_event.connect(self.on_event, sender=session_id)  # weak: kept alive by the caller

    def on_event(self, _sender: str, event: Event) -> None:
        data = json.loads(event.data)
        if event.type == EventType.ERROR:
            line = f"error: {data['file']} [{data['stage']}] {data['message']}"
            self.bar.write(printable(line), file=sys.stderr)  # a file name may hold terminal controls
        if "total_files" in data:
            self.bar.total = data["total_files"]
            self.bar.n = data["stats"]["processed_files"] + data["stats"]["skipped_duplicates"]
            self.bar.set_postfix(errors=data["stats"]["errors"], refresh=False)
            self.bar.set_description(data["status"])
            self.bar.refresh()

    def close(self) -> None:
        job_event.disconnect(self.on_event, sender=self.session_id)
        self.bar.close()


class ProgressLines:
    """Plain progress lines for logs (stdout is not a terminal): one line per ``interval``
    seconds at most, plus each error and the end, instead of a redrawn bar."""

    def __init__(self, session_id: str, stream: Any, interval: float = 1.0) -> None:
        self.session_id, self.stream, self.interval = session_id, stream, interval
        self.last = 0.0
        job_event.connect(self.on_event, sender=session_id)  # weak: kept alive by the caller

    def on_event(self, _sender: str, event: Event) -> None:
        data = json.loads(event.data)
        if event.type == EventType.ERROR:
            self._write(f"error: {data['file']} [{data['stage']}] {data['message']}")
            return
        if "total_files" not in data or (not event.terminal and time.monotonic() - self.last < self.interval):
            return
        self.last = time.monotonic()
        stats = data["stats"]
        done = stats["processed_files"] + stats["skipped_duplicates"]
        self._write(f"{data['status']}: {done}/{data['total_files']} files, {stats['errors']} errors")

    def _write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        job_event.disconnect(self.on_event, sender=self.session_id)


#: The command-line flag of each ingest parameter, so an error names what the user typed.
FLAGS = {
    "directory": "DIRECTORY",
    "pattern": "--pattern",
    "extract_metadata": "--no-metadata",
    "extract_keywords": "--no-keywords",
    "import_scores": "--no-scores",
    "enable_nsfw_detection": "--no-nsfw",
    "nsfw_threshold": "--threshold",
    "max_files": "--max-files",
    "skip_duplicates": "--keep-duplicates",
}


def session_url(session_id: str) -> str:
    """The session's page: ``INGEST_PUBLIC_URL`` (default ``http://`` + INGEST_BIND) + the path."""
    base = os.environ.get("INGEST_PUBLIC_URL") or "http://" + os.environ.get("INGEST_BIND", "127.0.0.1:8000")
    return f"{base.rstrip('/')}/ingest/{session_id}"


@ingest.command("run")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--pattern", help="Comma-separated globs, e.g. '**/*.jpg,**/*.png' (default: all media).")
@click.option("--no-metadata", is_flag=True, help="Skip metadata (EXIF, video info).")
@click.option("--no-keywords", is_flag=True, help="Skip keywords.")
@click.option("--no-scores", is_flag=True, help="Skip ratings and scores.")
@click.option("--no-nsfw", is_flag=True, help="Skip NSFW detection.")
@click.option("--threshold", type=float, help="NSFW threshold in [0, 1] (default 0.7).")
@click.option("--max-files", type=int, help="Stop after this many files.")
@click.option("--keep-duplicates", is_flag=True, help="Process files already in the catalog or seen twice.")
@click.option("--commit", "commit_after", is_flag=True, help="Commit the ok items to the catalog at the end.")
@click.option("--json", "as_json", is_flag=True, help="Print the final state as JSON on stdout.")
@click.option("--user", "username", help="The user who owns the session (default: the only admin).")
def run_command(
    directory: Path,
    pattern: str | None,
    no_metadata: bool,
    no_keywords: bool,
    no_scores: bool,
    no_nsfw: bool,
    threshold: float | None,
    max_files: int | None,
    keep_duplicates: bool,
    commit_after: bool,
    as_json: bool,
    username: str | None,
    watch: bool = False,
    auto_import: bool = False,
) -> None:
    """Ingest DIRECTORY in this process with progress on the terminal; exit 1 if the job fails.

    DIRECTORY need not be under INGEST_MEDIA_ROOTS: whoever runs the CLI can read it anyway.
    A terminal gets a progress bar (stderr); otherwise plain lines, at most one a second.
    """
    try:
        require_current(current_app)
    except SchemaOutOfDate as exc:
        raise click.ClickException(str(exc)) from None
    registry: JobRegistry = current_app.extensions["ingest_jobs"]
    try:
        user = default_cli_user(registry.engine, username)
    except AccountError as exc:
        raise click.UsageError(exc.message) from None
    registry.media_roots.append(directory.resolve())
    body: dict[str, Any] = {
        "directory": str(directory.resolve()),
        "extract_metadata": not no_metadata,
        "extract_keywords": not no_keywords,
        "import_scores": not no_scores,
        "enable_nsfw_detection": not no_nsfw,
        "skip_duplicates": not keep_duplicates,
        "watch": watch,
        "auto_import": auto_import,
    }
    for name, value in (("pattern", pattern), ("nsfw_threshold", threshold), ("max_files", max_files)):
        if value is not None:
            body[name] = value
    try:
        parameters = parse_parameters(body, registry.media_roots)
    except ParameterError as exc:
        field = exc.field or ""
        raise click.BadParameter(exc.message.removeprefix(field + " "), param_hint=FLAGS.get(field, field)) from None

    job = registry.jobs[registry.start(parameters, user_id=user.id, here=True)]
    out = sys.stderr if as_json else sys.stdout
    click.echo(f"session: {session_url(job.session_id)}", file=out)
    if out.isatty():
        bar: ProgressBar | ProgressLines = ProgressBar(job.session_id, enabled=True)
    else:
        bar = ProgressLines(job.session_id, out)
    interrupted = False

    def on_ctrl_c() -> None:
        # A gevent signal handler runs in a greenlet of its own: Python's default raised
        # KeyboardInterrupt in whichever greenlet ran at that moment, the job's included.
        nonlocal interrupted
        interrupted = True
        if watch:
            job.cancel.request()  # Ctrl-C ends a watch as Cancel on the page does
        else:
            job.greenlet.kill(block=False)  # the session becomes "interrupted" and can be resumed

    ctrl_c = gevent.signal_handler(signal.SIGINT, on_ctrl_c)
    try:
        job.greenlet.join()
    finally:
        ctrl_c.cancel()
        bar.close()
    if interrupted and not watch:
        raise KeyboardInterrupt
    state = registry.state(job.session_id)
    finished = SessionStatus.CANCELLED if watch else SessionStatus.COMPLETED  # a watch ends only when cancelled
    if commit_after and state["status"] == finished:
        state["commit"] = commit_session(registry.engine, job.session_id, set())
    _report(state, as_json)
    if state["status"] != finished:
        sys.exit(1)


ingest.add_command(click.Command(
    "watch",
    params=[*run_command.params, click.Option(
        ["--auto-import"], is_flag=True, help="Commit each new ok file to the catalog as soon as it is processed."
    )],
    callback=functools.partial(run_command.callback, watch=True),  # type: ignore[arg-type]
    help="Ingest DIRECTORY as `ingest run` does, then keep watching it: each new or changed file (once it stopped "
         "changing for INGEST_WATCH_SETTLE seconds) is ingested too, until Ctrl-C or Cancel on the page.",
))


def _report(state: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(state, indent=2))
        return
    stats = state["stats"]
    click.echo(
        f"{state['status']}: session {state['session_id']}, {state['total_files']} files, "
        f"{stats['processed_files']} processed, {stats['skipped_duplicates']} duplicates skipped, "
        f"{stats['errors']} errors, {state['timing']['files_per_s']} files/s"
    )
    if "commit" in state:
        commit = state["commit"]
        click.echo(f"catalog: {commit['added']} added, {commit['updated']} updated")
    elif state["status"] == SessionStatus.COMPLETED:
        click.echo("nothing committed — add --commit to import the ok files into the catalog")


@ingest.command("samples")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.option("--if-empty", is_flag=True, help="Do nothing when the directory already has files.")
def samples_command(directory: Path | None, if_empty: bool) -> None:
    """Write the sample media set into DIRECTORY (default: the first media root)."""
    directory = directory or current_app.config["MEDIA_ROOTS"][0]
    if if_empty and directory.is_dir() and any(directory.iterdir()):
        click.echo(f"{directory} is not empty; no samples written")
        return
    from ingestapp.cli.samples import write_samples  # only this command needs the encoders

    directory.mkdir(parents=True, exist_ok=True)
    written = write_samples(directory)
    click.echo(f"wrote {len(written)} sample files to {directory}")


@click.command("worker")
@click.option("--concurrency", "-c", type=click.IntRange(1), default=None,
              help="Stage worker processes (default: INGEST_WORKERS, the CPU count).")
@click.option("--loglevel", "-l", default="INFO", show_default=True, help="Celery's log level.")
def worker_command(concurrency: int | None, loglevel: str) -> None:
    """Run a work-tier process: jobs and file tasks from Redis (needs REDIS_URL)."""
    if not current_app.config["REDIS_URL"]:
        raise click.UsageError("the work tier needs REDIS_URL (the Redis the web servers use)")
    count = concurrency or current_app.config["WORKERS"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "gevent.monkey", "--module", "ingestapp.worker",
                              "--concurrency", str(count), "--loglevel", loglevel])
