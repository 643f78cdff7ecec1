"""The embedded broker (kombu's filesystem transport, messages written atomically): producers in
several threads and a consumer at the same time lose nothing and never read a half-written
message, which stopped the Celery worker with kombu's own transport."""
from __future__ import annotations

import threading

import annotator.celery  # noqa: F401 - registers the transport
from kombu import Connection


def _conn(folder):
    return Connection("filesystem://", transport_options={
        "data_folder_in": str(folder), "data_folder_out": str(folder), "store_processed": False,
        "control_folder": str(folder / "control")})


def test_the_filesystem_transport_is_ours():
    from annotator.broker import Transport

    with Connection("filesystem://") as conn:
        assert isinstance(conn.transport, Transport)


def test_concurrent_producers_and_a_consumer_lose_and_corrupt_nothing(tmp_path):
    per_thread, threads = 300, 4
    big = "x" * 20_000  # large enough that a write takes a while

    def produce(k: int) -> None:
        with _conn(tmp_path) as conn:
            q = conn.SimpleQueue("work")
            for i in range(per_thread):
                q.put({"producer": k, "n": i, "pad": big})
            q.close()

    got = []
    done = threading.Event()
    produced = threading.Event()

    def consume() -> None:
        with _conn(tmp_path) as conn:
            q = conn.SimpleQueue("work")
            while len(got) < per_thread * threads:
                try:
                    message = q.get(timeout=2)
                except q.Empty:
                    if produced.is_set():
                        break  # everything was written and nothing more comes
                    continue
                got.append((message.payload["producer"], message.payload["n"], len(message.payload["pad"])))
                message.ack()
            q.close()
        done.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    producers = [threading.Thread(target=produce, args=(k,)) for k in range(threads)]
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    produced.set()
    consumer.join(timeout=300)
    assert done.is_set()
    assert sorted(got) == sorted((k, i, len(big)) for k in range(threads) for i in range(per_thread))


def test_a_message_still_being_written_is_not_taken(tmp_path):
    # Its own queue name: kombu remembers bindings per process, not per folder.
    (tmp_path / ".1_abc.partial.msg.part").write_bytes(b'{"body": "hal')  # a writer mid-message
    with _conn(tmp_path) as conn:
        q = conn.SimpleQueue("partial")
        q.put({"n": 1})
        assert q.get(timeout=5).payload == {"n": 1}
        try:
            q.get(timeout=0.5)
            raise AssertionError("a half-written message was delivered")
        except q.Empty:
            pass
        q.close()
