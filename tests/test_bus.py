"""The Redis bus reader's bookkeeping: duplicates dropped, a gap in seq sends the streams to the log.

(The whole path, with a real redis-server and several gunicorn workers, is tests/test_scaling.py.)
"""

from __future__ import annotations

from ingestapp.events.bus import RedisStreamBus
from ingestapp.events.model import Event, job_event, make_event
from tests.factories import start, wait_for, write_jpegs


def entry(event: Event) -> dict[bytes, bytes]:
    """An ``XREAD`` entry's fields, as the publisher writes them."""
    return {b"session_id": event.session_id.encode(), b"seq": str(event.seq).encode(),
            b"type": event.type.encode(), b"data": event.data.encode()}


def test_the_reader_drops_duplicates_and_resyncs_on_a_gap() -> None:
    gaps: list[str | None] = []
    bus = RedisStreamBus("redis://127.0.0.1:1/0", "test", 100, on_gap=gaps.append)  # never connects
    delivered: list[int] = []

    def receive(_sender: str, event: Event) -> None:
        delivered.append(event.seq)

    job_event.connect(receive, sender="s1")
    try:
        for seq in (1, 2, 2, 1, 4, 5):  # a retried publish (2, 1 again), then 3 never arrives
            bus._deliver(entry(make_event("s1", seq, "progress", {"status": "processing"})))
    finally:
        job_event.disconnect(receive, sender="s1")
    assert delivered == [1, 2, 4, 5]
    assert gaps == ["s1"]  # once, at 4: that session's streams catch up from the SQL log


def test_metrics_of_the_embedded_default(client, app, media) -> None:
    """One process, the local bus: /metrics says the bus is up and counts sessions by status;
    /api/ingest/metrics says its figures are this worker's."""
    write_jpegs(media, 3)
    wait_for(app, start(client, media), {"completed"})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'ingest_bus_up{bus="local"} 1.0' in text
    assert 'ingest_sessions{status="completed"} 1.0' in text
    assert 'ingest_files_total{outcome="ok",stage="identify"}' in text
    figures = client.get("/api/ingest/metrics").get_json()
    assert figures["scope"] == "worker" and figures["bus"] == "local" and figures["bus_up"] is True
