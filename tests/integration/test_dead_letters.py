"""Dead letters: listed with their reason without being consumed, and requeued once fixed."""

from __future__ import annotations

import json

from tests.fakes.daemon import DaemonProcess
from tests.fakes.pubsub_tools import PubSubRig
from tests.fakes.waiting import wait_until


def _letters(daemon: DaemonProcess) -> list[dict]:
    """The dead letters as `dead-letters --json` lists them, once there are some."""
    def listed() -> list[dict]:
        done = daemon.cli("dead-letters", "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    return wait_until(listed, 60, "a message on the dead-letter subscription", poll=0.3)


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
        wait_until(lambda: [letter for letter in _letters(daemon)
                            if letter["id"] != letters[0]["id"]], 60,
                   "the requeued message back through the daemon, dead-lettered again", poll=0.3)
        missing = daemon.cli("dead-letters", "--requeue", "no-such-id")
        assert missing.returncode == 2 and "no dead letter no-such-id" in missing.stderr
    finally:
        daemon.stop_quietly()
        rig.close()
