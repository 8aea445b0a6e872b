"""Dead letters: listed with their reason without being consumed, and requeued once fixed."""

from __future__ import annotations

import json
import time

from tests.fakes.daemon import DaemonProcess
from tests.fakes.pubsub_tools import PubSubRig


def _letters(daemon: DaemonProcess) -> list[dict]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        listed = daemon.cli("dead-letters", "--json")
        assert listed.returncode == 0, listed.stderr
        letters = json.loads(listed.stdout)
        if letters:
            return letters
        time.sleep(0.3)
    raise AssertionError("nothing reached the dead-letter subscription")


def test_given_unusable_message_then_listed_twice_and_requeued(emulator_host, project_id,
                                                               tmp_path):
    env = {"PUBSUB_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project_id}
    rig = PubSubRig(project_id)
    daemon = DaemonProcess(tmp_path, env).start()
    try:
        rig.publish(b'{"no_signal_id": true}')
        letters = _letters(daemon)
        assert letters[0]["body"] == '{"no_signal_id": true}'
        assert letters[0]["reason"].startswith("signal_id missing")
        assert _letters(daemon)[0]["id"] == letters[0]["id"]  # listing did not consume it
        requeued = daemon.cli("dead-letters", "--requeue", letters[0]["id"])
        assert requeued.returncode == 0 and "requeued" in requeued.stdout
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # back through the daemon: dead-lettered again
            again = json.loads(daemon.cli("dead-letters", "--json").stdout)
            if again and again[0]["id"] != letters[0]["id"]:
                break
            time.sleep(0.3)
        else:
            raise AssertionError("the requeued message did not come back through the daemon")
        missing = daemon.cli("dead-letters", "--requeue", "no-such-id")
        assert missing.returncode == 2 and "no dead letter no-such-id" in missing.stderr
    finally:
        daemon.stop_quietly()
        rig.close()
