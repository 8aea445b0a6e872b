"""Redaction in one place: every secret this process knows is scrubbed from log records,
tracebacks, configuration errors and command output by the one `REDACTOR`.

Secrets are registered once, when they are read (`load_settings`, the Telegram notifier,
account credentials); passwords inside URIs (`scheme://user:PASSWORD@host`) are scrubbed
whether registered or not, so a mistyped `MONGODB_URI` cannot echo its password either.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from urllib.parse import quote, unquote

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 4  # shorter values would scrub ordinary words
# scheme://user:password@  (any scheme: a mistyped one must not echo its password either)
_URI_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*:)([^\s/'\"]+)(@)")


def redact_uri_passwords(text: str) -> str:
    if "://" not in text:
        return text
    return _URI_PASSWORD.sub(lambda m: f"{m.group(1)}{REDACTED}{m.group(3)}", text)


def uri_password(uri: str | None) -> str | None:
    match = _URI_PASSWORD.search(uri or "")
    return unquote(match.group(2)) if match else None


def secret_forms(secret: str) -> set[str]:
    """The secret as it may appear: whole, URL-quoted, and (a bot token) its part after the
    id."""
    forms = {secret, quote(secret, safe="")}
    _, colon, rest = secret.partition(":")
    if colon and len(rest) >= 8:
        forms.add(rest)
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


class Redactor:
    """Wraps the process's log-record factory once, so that no record from any logger (httpx
    logs request URLs, python-telegram-bot puts its token in some messages) carries a secret,
    in its message or its traceback."""

    def __init__(self) -> None:
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self._previous: Callable[..., logging.LogRecord] | None = None

    def add(self, *secrets: str | None) -> None:
        with self._lock:
            known = set(self._secrets)
            for secret in secrets:
                if secret:
                    known.update(secret_forms(str(secret)))
            self._secrets = tuple(sorted(known, key=len, reverse=True))
            if self._previous is None:
                self._previous = logging.getLogRecordFactory()
                logging.setLogRecordFactory(self._make_record)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return redact_uri_passwords(text)

    def leaks(self, text: str) -> bool:
        return self.redact(text) != text

    def format_exception(self, error: BaseException) -> str:
        return self.redact("".join(traceback.format_exception(error)).rstrip("\n"))

    def _make_record(self, *args, **kwargs) -> logging.LogRecord:
        record = self._previous(*args, **kwargs)
        with contextlib.suppress(Exception):  # a bad record fails later, in its handler
            self._scrub(record)
        return record

    def _scrub(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.leaks(message):
            record.msg, record.args = self.redact(message), ()
        if record.exc_info and record.exc_info[1] is not None:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            if self.leaks(text):
                record.exc_text, record.exc_info = self.redact(text), None

    def install_excepthooks(self) -> None:
        """Uncaught exceptions (main thread and others) print their traceback redacted."""

        def main_hook(kind, error, tb) -> None:
            text = "".join(traceback.format_exception(kind, error, tb))
            sys.stderr.write(self.redact(text))

        def thread_hook(hook_args) -> None:
            if hook_args.exc_value is None:
                return
            name = getattr(hook_args.thread, "name", "?")
            text = "".join(traceback.format_exception(hook_args.exc_type, hook_args.exc_value,
                                                      hook_args.exc_traceback))
            sys.stderr.write(self.redact(f"Exception in thread {name}:\n{text}"))

        sys.excepthook = main_hook
        threading.excepthook = thread_hook


REDACTOR = Redactor()  # one per process, like the log-record factory it wraps


def protect(secrets: Iterable[str | None]) -> None:
    """Register secrets with the process's redactor."""
    REDACTOR.add(*secrets)


def redact(text: str) -> str:
    return REDACTOR.redact(text)
