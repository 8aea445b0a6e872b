"""Logging (SPEC §8): console, logs/execution_service.log and logs/signal_processing.log."""

from __future__ import annotations

import logging
import logging.handlers
import queue
from pathlib import Path

from execution_service.domain.text import single_line
from execution_service.service.ports import JOURNEY_LOGGER

FORMAT = "%(asctime)s | [EXECUTION] | %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
SERVICE_LOG = "execution_service.log"
JOURNEY_LOG = "signal_processing.log"


class OneLineFormatter(logging.Formatter):
    """A record's message on one line: line breaks, ANSI escapes and bidi controls quoted from a
    message are escaped, so each line has the shape the service gave it. A traceback, appended
    after the message, keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = single_line(record.message)
        return super().formatMessage(record)


class JourneyFilter(logging.Filter):
    """Only the lines that tell a signal's journey (logged on JOURNEY_LOGGER) go to the shared
    journey log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == JOURNEY_LOGGER


def setup_logging(log_dir: Path, level: str = "INFO", console: bool = True
                  ) -> logging.handlers.QueueListener:
    """The order path only enqueues log records; a listener thread formats and writes them.
    Returns the listener: stop it at exit to flush."""
    log_dir.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter(FORMAT, DATE_FORMAT)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_execution_service", False):
            root.removeHandler(handler)
            handler.close()
    handlers: list[logging.Handler] = [_rotating(log_dir / SERVICE_LOG)]
    journey = _rotating(log_dir / JOURNEY_LOG)
    journey.addFilter(JourneyFilter())
    handlers.append(journey)
    if console:
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        handler.setFormatter(formatter)
    records: queue.SimpleQueue = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, *handlers, respect_handler_level=True)
    front = logging.handlers.QueueHandler(records)
    front.setFormatter(OneLineFormatter())  # the listener's handlers get the escaped message
    front._execution_service = True  # type: ignore[attr-defined]
    root.addHandler(front)
    root.setLevel(level.upper())
    listener.start()
    for noisy in ("google", "grpc", "urllib3", "httpx", "httpcore", "ib_async"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return listener


def _rotating(path: Path) -> logging.Handler:
    return logging.handlers.RotatingFileHandler(path, maxBytes=20 * 1024 * 1024, backupCount=5,
                                                encoding="utf-8")
