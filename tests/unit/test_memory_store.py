"""The in-memory store (`mongomock://`) read on one thread while another writes, as the daemon
does (event loop and store thread): no half-applied update is ever seen, nothing raises and
nothing hangs."""

from __future__ import annotations

import sys
import threading

import pytest

from execution_service.adapters.store import open_store

WRITES = 400


@pytest.fixture
def thread_switches_often():
    """Threads take turns every microsecond: a race that needs one badly timed switch shows
    at once (with the unserialized engine: torn reads, errors and a hang in every run)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_given_a_writer_and_a_reader_on_two_threads_then_every_read_sees_whole_updates(
        thread_switches_often):
    """Given a document whose fields `a` and `b` are set together by 400 updates on one
    thread; when another thread reads it all along (find_one, and find().sort() read through
    its cursor); then every read has a == b, no read fails, and both threads finish."""
    handle = open_store("mongomock://", "trading", None)
    records = handle.database["records"]
    records.insert_one({"_id": "r", "a": 0, "b": 0, "events": []})
    seen: list[tuple[int, int]] = []
    failures: list[str] = []
    written = threading.Event()

    def write() -> None:
        for n in range(1, WRITES + 1):
            records.update_one({"_id": "r"}, {"$set": {"a": n, f"f{n % 50}": n, "b": n},
                                              "$push": {"events": {"n": n}}})
        written.set()

    def read() -> None:
        while not written.is_set():
            try:
                for doc in (records.find_one({"_id": "r"}),
                            *records.find({"_id": "r"}).sort("a", -1)):
                    seen.append((doc["a"], doc["b"]))
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                failures.append(repr(e))

    threads = [threading.Thread(target=write, daemon=True),
               threading.Thread(target=read, daemon=True)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)  # a bound on a hang, far beyond the second this takes
        assert not any(thread.is_alive() for thread in threads), "a thread is stuck"
        assert failures == []
        assert seen and [(a, b) for a, b in seen if a != b] == []
        assert records.find_one({"_id": "r"})["a"] == WRITES
    finally:
        handle.close()
