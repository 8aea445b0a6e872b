"""The service's logging set up for one test and taken down after it, files flushed."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from execution_service.adapters.logs import setup_logging


@contextmanager
def service_logging(log_dir: Path) -> Iterator[None]:
    listener = setup_logging(log_dir, console=False)
    try:
        yield
    finally:
        listener.stop()
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "_execution_service", False)]:
            root.removeHandler(handler)
