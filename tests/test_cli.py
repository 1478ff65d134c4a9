"""``flask --app ingestapp ingest ...`` end to end (in-process through Flask's CLI runner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask import Flask

from ingestapp.jobs import job as jobs

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "camera-samples"


def run_cli(app: Flask, *args: str):
    return app.test_cli_runner().invoke(args=["ingest", *args])


def test_samples_then_run_with_commit(app: Flask, tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    result = run_cli(app, "samples", str(samples))
    assert result.exit_code == 0, result.output
    written = [p for p in samples.rglob("*") if p.is_file()]
    assert any(p.suffix == ".mp4" for p in written) and (samples / "corrupt.jpg").exists()

    result = run_cli(app, "run", str(samples), "--no-nsfw", "--commit", "--json")
    assert result.exit_code == 0, result.output
    state = json.loads(result.stdout)
    assert state["status"] == "completed" and state["progress_percent"] == 100.0
    assert state["processed_files"] + state["stats"]["skipped_duplicates"] == state["total_files"]
    assert state["stats"]["errors"] >= 1 and "nsfw" not in state["stages"]
    ok = state["total_files"] - state["stats"]["errors"] - state["stats"]["skipped_duplicates"]
    assert state["commit"] == {"added": ok, "updated": 0, "excluded": 0}

    again = run_cli(app, "samples", str(samples), "--if-empty")
    assert again.exit_code == 0 and "not empty" in again.output


def test_run_options_and_bad_input(app: Flask, tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    run_cli(app, "samples", str(samples))
    result = run_cli(app, "run", str(samples), "--pattern", "**/*.png", "--max-files", "1", "--no-nsfw", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total_files"] == 1
    result = run_cli(app, "run", str(samples), "--threshold", "3")
    assert result.exit_code == 2 and "nsfw_threshold" not in result.output
    assert "Invalid value for --threshold: must be between 0 and 1" in result.output


def test_plain_output_links_the_session_and_says_nothing_was_committed(app: Flask, tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    run_cli(app, "samples", str(samples))
    app.config["FILE_DELAY"] = 0.05  # about 0.7 s of work: more than one progress line would be too many
    app.extensions["ingest_jobs"].file_delay = 0.05
    result = run_cli(app, "run", str(samples), "--no-nsfw", "--no-keywords", "--no-scores", "--no-metadata",
                     "--keep-duplicates")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("session: http://") and "/ingest/" in lines[0]
    progress = [line for line in lines if line.startswith(("scanning:", "processing:", "queued:"))]
    assert 1 <= len(progress) <= 2, lines  # at most one a second, no bar redraws
    assert "\r" not in result.stdout
    assert any(line.startswith("completed: ") for line in lines)
    assert lines[-1] == "nothing committed — add --commit to import the ok files into the catalog"
    session_id = lines[0].rsplit("/", 1)[1]
    state = app.extensions["ingest_jobs"].state(session_id)
    assert state["parameters"]["skip_duplicates"] is False and "metadata" not in state["stages"]


def test_exit_status_is_nonzero_when_the_job_fails(app: Flask, tmp_path: Path, monkeypatch) -> None:
    samples = tmp_path / "samples"
    run_cli(app, "samples", str(samples))

    def unreadable(directory: Path, media_roots: list[Path]):
        raise PermissionError(13, "Permission denied", str(directory))

    monkeypatch.setattr(jobs, "list_directory", unreadable)
    result = run_cli(app, "run", str(samples), "--no-nsfw", "--json")
    assert result.exit_code == 1
    state = json.loads(result.stdout)
    assert state["status"] == "failed" and "Permission denied" in state["message"]
    assert {stage["status"] for stage in state["stages"].values()} <= {"completed", "failed"}, state["stages"]
    assert state["stages"]["scanning"]["status"] == "failed" and state["worker_pool"]["active"] == 0


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"real camera samples not found at {CORPUS}")
def test_corpus_ingest_accounts_for_every_file(app: Flask) -> None:
    result = run_cli(app, "run", str(CORPUS), "--commit", "--json")
    assert result.exit_code == 0, result.output
    state = json.loads(result.stdout)
    files = [p for p in CORPUS.rglob("*") if p.is_file()]
    assert state["total_files"] == len(files)
    assert state["processed_files"] + state["stats"]["skipped_duplicates"] == len(files)

    client = app.test_client()
    items = client.get(f"/api/ingest/{state['session_id']}/items?limit=500").get_json()["items"]
    assert len(items) == len(files)
    by_path = {item["path"]: item for item in items}
    assert by_path["corrupted.jpg"]["status"] == "error"
    assert all(item["status"] in ("ok", "skipped") for path, item in by_path.items() if path != "corrupted.jpg")
    for path, item in by_path.items():
        if path.startswith("gps/") and item["status"] == "ok":
            assert item["metadata"]["gps"]["latitude"] is not None, path
    catalog = client.get("/api/catalog?limit=500").get_json()
    assert catalog["total"] == sum(item["status"] == "ok" for item in items)


def test_worker_needs_redis(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["worker", "--concurrency", "2"])
    assert result.exit_code == 2 and "the work tier needs REDIS_URL" in result.output
