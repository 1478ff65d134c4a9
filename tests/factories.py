"""Small media files written by the tests themselves."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gevent
from flask import Flask
from PIL import Image


def write_jpeg(path: Path, size: tuple[int, int] = (96, 64), color: tuple[int, int, int] = (200, 90, 40)) -> Path:
    """A small solid JPEG, unique by content: its name goes into the JPEG comment (COM segment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, "JPEG", quality=85, comment=os.fsencode(path))
    return path


def write_jpegs(directory: Path, count: int, prefix: str = "img") -> list[Path]:
    """``count`` distinct JPEGs named ``{prefix}_0000.jpg`` …"""
    return [write_jpeg(directory / f"{prefix}_{i:04d}.jpg", color=(i % 256, 90, 77)) for i in range(count)]


def hoard_sidecar(path: Path, keywords: list[str]) -> None:
    """An XMP sidecar whose dc:subject bag holds ``keywords`` (as many as a test likes)."""
    bag = "".join(f"<rdf:li>{keyword}</rdf:li>" for keyword in keywords)
    path.write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<dc:subject><rdf:Bag>{bag}</rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>"
    )


def start(client: Any, directory: Path, **parameters: Any) -> str:
    """POST /api/ingest/process and return the session id (asserts 202)."""
    body = {"parameters": {"directory": str(directory), "enable_nsfw_detection": False, **parameters}}
    response = client.post("/api/ingest/process", json=body)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["session_id"]


def wait_for(app: Flask, session_id: str, statuses: set[str], timeout: float = 30) -> dict[str, Any]:
    """Yield to the hub until the session reaches one of ``statuses``; return its state."""
    registry = app.extensions["ingest_jobs"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = registry.state(session_id)
        if state["status"] in statuses:
            return state
        gevent.sleep(0.01)
    raise TimeoutError(f"{session_id} stayed {state['status']}")


class HubLags(list[float]):
    """How late (seconds) each of a ticker's wake-ups was, and what the process did meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu: list[float] = []  # the hub thread's CPU time (seconds) in each tick
        self.collecting: list[float] = []  # of it, in the garbage collector

    def worst(self) -> str:
        """The longest lag in words: hub CPU far below the lag means this process was not running
        (another process had the core, or a system call blocked), not that the hub was busy."""
        at = max(range(len(self)), key=self.__getitem__)
        return (f"{self[at] * 1000:.1f} ms late, of which the hub thread ran {self.cpu[at] * 1000:.1f} ms "
                f"({self.collecting[at] * 1000:.1f} ms collecting garbage)")


@contextmanager
def hub_lags(period: float = 0.005) -> Iterator[HubLags]:
    """A ticker greenlet for the ``with`` block: it sleeps ``period`` seconds again and again, and the
    list it yields gets how late (seconds) each wake-up was: how long the hub was held meanwhile.

    The test process's objects are moved out of the collector's reach meanwhile, as gunicorn.conf.py
    does once a worker has loaded the app: otherwise a full collection walks this process's hundreds
    of thousands of objects (pytest's and every earlier test's), a 70-150 ms pause of every thread
    that the product does not have."""
    lags = HubLags()
    collecting = [0.0, 0.0]  # seconds spent in the collector so far, and when the current run began
    running = True

    def on_collection(phase: str, _info: dict) -> None:
        if phase == "start":
            collecting[1] = time.perf_counter()
        else:
            collecting[0] += time.perf_counter() - collecting[1]

    def tick() -> None:
        while running:
            before, cpu, collected = time.perf_counter(), time.thread_time(), collecting[0]
            gevent.sleep(period)
            lags.append(time.perf_counter() - before - period)
            lags.cpu.append(time.thread_time() - cpu)
            lags.collecting.append(collecting[0] - collected)

    gc.collect()
    gc.freeze()
    gc.callbacks.append(on_collection)
    ticker = gevent.spawn(tick)
    try:
        yield lags
    finally:
        running = False
        ticker.join()
        gc.callbacks.remove(on_collection)
        gc.unfreeze()
