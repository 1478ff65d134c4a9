"""The Redis bus reader's bookkeeping: duplicates dropped, a gap in seq sends the streams to the log.

(The whole path, with a real redis-server and several gunicorn workers, is tests/test_scaling.py.)
"""

from __future__ import annotations

from ingestapp.bus import RedisStreamBus
from ingestapp.events import Event, job_event, make_event


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
