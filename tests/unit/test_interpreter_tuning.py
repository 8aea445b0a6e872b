"""The daemon's interpreter settings: hand-offs between the event loop and the store thread, and
the garbage collector's pauses."""

from __future__ import annotations

import gc
import sys

from execution_service.run import GIL_SWITCH_SECONDS, settle_heap, tune_interpreter


def test_given_the_daemon_starting_then_threads_take_turns_within_two_milliseconds():
    """Given the default 5 ms switch interval, when the daemon tunes its interpreter, then a
    thread woken for its turn waits at most 2 ms for the GIL (restored after the test)."""
    default = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        tune_interpreter()
        assert sys.getswitchinterval() == GIL_SWITCH_SECONDS <= 0.002
    finally:
        sys.setswitchinterval(default)


def test_given_start_up_done_then_its_objects_are_frozen_out_of_full_collections():
    """Given the daemon built (modules, clients, settings); when it settles its heap before
    consuming; then those objects sit in the permanent generation, so no later full
    collection walks them (each one stops every thread); unfrozen after the test."""
    try:
        settle_heap()
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
