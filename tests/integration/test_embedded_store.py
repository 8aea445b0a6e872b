"""The embedded on-disk store: acknowledged writes survive kill -9; one daemon per store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from execution_service.adapters.store import Store, open_store
from tests.fakes.daemon import DaemonProcess

OPEN = """
import sys, datetime
from execution_service.adapters.store import Store, open_store
from pathlib import Path
handle = open_store(None, "trading", Path(sys.argv[1]))
store = Store(handle.database)
store.ensure_indexes()
n = 0
def insert(n):
    store.records.insert_one({"_id": f"exec_{n}", "signal_id": f"s{n}", "n": n,
                              "at": datetime.datetime.now(datetime.timezone.utc)})
"""
WRITERS = {
    "each write committed": OPEN + """
while True:
    n += 1
    insert(n)
    print(n, flush=True)  # printed only after insert_one returned: acknowledged
""",
    # as the daemon's store thread: five calls a batch, their results handed back only after
    # its commit
    "five a batch": OPEN + """
while True:
    with handle.batches.batch() as batch:
        for k in range(1, 6):
            batch.run(lambda k=k: insert(n + k))
    assert all(error is None for _, error in batch.outcomes())
    n += 5
    print(n, flush=True)  # acknowledged
""",
}


@pytest.mark.parametrize("writer", WRITERS)
def test_given_writer_killed_with_sigkill_then_every_acknowledged_insert_is_on_disk(
        tmp_path, writer):
    writer = subprocess.Popen([sys.executable, "-c", WRITERS[writer], str(tmp_path / "data")],
                              stdout=subprocess.PIPE, text=True)
    acknowledged = 0
    deadline = time.monotonic() + 20
    while acknowledged < 300 and time.monotonic() < deadline:
        acknowledged = int(writer.stdout.readline())
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=10)
    acknowledged = max([acknowledged, *(int(line) for line in writer.stdout.read().split())])
    assert acknowledged >= 300
    handle = open_store(None, "trading", tmp_path / "data")
    try:
        store = Store(handle.database)
        on_disk = {doc["n"] for doc in store.records.find({}, {"n": 1})}
    finally:
        handle.close()
    missing = set(range(1, acknowledged + 1)) - on_disk
    assert not missing, f"lost acknowledged inserts: {sorted(missing)[:10]}"


def test_given_unique_index_then_it_holds_after_reopen(tmp_path):
    handle = open_store(None, "trading", tmp_path / "data")
    Store(handle.database).ensure_indexes()
    Store(handle.database).records.insert_one({"_id": "exec_a", "signal_id": "a"})
    handle.close()
    reopened = open_store(None, "trading", tmp_path / "data")
    try:
        store = Store(reopened.database)
        store.ensure_indexes()
        from execution_service.adapters.store import DuplicateSignal

        try:
            store.insert_record({"_id": "exec_b", "signal_id": "a"})
        except DuplicateSignal:
            pass
        else:
            raise AssertionError("unique signal_id index did not hold after reopen")
    finally:
        reopened.close()


def test_given_daemon_on_embedded_store_then_a_second_is_refused_but_reads_work(
        emulator_host, project_id, tmp_path):
    env = {"PUBSUB_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project_id}
    first = DaemonProcess(tmp_path, env).start()
    try:
        second = subprocess.run([sys.executable, "-m", "execution_service", "run"],
                                cwd=tmp_path, env=first.env, capture_output=True, text=True,
                                timeout=60)
        assert second.returncode != 0
        assert f"another daemon (pid {first.process.pid}) already uses the embedded store" \
            in second.stderr
        listed = subprocess.run([sys.executable, "-m", "execution_service", "accounts", "list",
                                 "--json"], cwd=tmp_path, env=first.env, capture_output=True,
                                text=True, timeout=60)
        assert listed.returncode == 0
        assert [a["_id"] for a in json.loads(listed.stdout)] == ["acc_abc123"]
    finally:
        first.stop_quietly()
