"""The daemon's interpreter setting for hand-offs between the event loop and the store thread."""

from __future__ import annotations

import sys

from execution_service.run import GIL_SWITCH_SECONDS, tune_interpreter


def test_given_the_daemon_starting_then_threads_take_turns_within_a_millisecond():
    """Given the default 5 ms switch interval, when the daemon tunes its interpreter, then a
    thread woken for its turn waits at most 1 ms for the GIL (restored after the test)."""
    default = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        tune_interpreter()
        assert sys.getswitchinterval() == GIL_SWITCH_SECONDS <= 0.001
    finally:
        sys.setswitchinterval(default)
