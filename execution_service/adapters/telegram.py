"""Telegram notifier (SPEC §7): a bounded queue drained by one task through python-telegram-bot.

`notify` only composes the text and queues it; a slow, failing or hanging Bot API can cost
messages (counted) but never time on the order path. The bot token is scrubbed from every log
record of the process, whichever logger or handler produced it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from telegram.error import BadRequest, RetryAfter, TelegramError, TimedOut
from telegram.ext import AIORateLimiter, ExtBot
from telegram.request import HTTPXRequest

from execution_service.domain.notices import OrderNotice, ServiceAlert
from execution_service.domain.telegram_text import compose_message, truncate
from execution_service.redaction import protect, redact

logger = logging.getLogger(__name__)

@dataclass
class _AlertWindow:
    started: float
    collapsed: int = 0


class TelegramNotifier:
    """Implements the Notifier port: fire-and-forget delivery to one chat."""

    def __init__(
        self,
        token: str,
        chat_id: str,
        api_url: str,
        queue_size: int = 1000,
        alert_window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        http_timeout: float = 5.0,
        stop_timeout: float = 3.0,
        max_retries: int = 3,
    ) -> None:
        if not token or not chat_id or queue_size < 1:
            raise ValueError("TelegramNotifier needs a bot token, a chat id and queue_size >= 1")
        protect([token])  # before the bot exists: it logs its URL, token included
        self._token = token
        self._chat_id = chat_id
        self._api_url = api_url.rstrip("/")
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self._alert_window = alert_window
        self._clock = clock
        self._http_timeout = http_timeout
        self._stop_timeout = stop_timeout
        self._max_retries = max_retries
        self._windows: dict[str, _AlertWindow] = {}
        self._counts = dict.fromkeys(("sent", "failed", "dropped", "collapsed"), 0)
        self._bot: ExtBot | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings) -> TelegramNotifier:
        return cls(
            token=settings.TELEGRAM_BOT_TOKEN,
            chat_id=settings.TELEGRAM_CHAT_ID,
            api_url=settings.TELEGRAM_API_URL,
        )

    def __repr__(self) -> str:
        return f"TelegramNotifier(chat_id={self._chat_id!r}, api_url={self._api_url!r})"

    def notify(self, event: OrderNotice | ServiceAlert) -> None:
        """Queue the event's message and return at once; safe from any thread; never raises."""
        try:
            if self._loop is not None and threading.get_ident() != self._loop_thread:
                self._loop.call_soon_threadsafe(self._accept, event)
            else:
                self._accept(event)
        except Exception as e:  # noqa: BLE001 - notify must never raise
            self._counts["dropped"] += 1
            logger.error("Telegram notice dropped: %s", describe_error(e))

    async def start(self) -> None:
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._bot = self._build_bot()
        self._task = asyncio.create_task(self._drain(), name="telegram-notifier")

    async def stop(self) -> None:
        """Send what can be sent within `stop_timeout`, count the rest as dropped, close."""
        self._closed = True
        if self._task is None:
            self._discard_queued()
            return
        try:
            await asyncio.wait_for(self._queue.join(), self._stop_timeout)
        except TimeoutError:
            logger.warning("Telegram: stopping with %d notices unsent", self._queue.qsize())
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        self._discard_queued()
        await self._close_bot()

    def stats(self) -> dict:
        return {"enabled": True, **self._counts, "queued": self._queue.qsize()}

    def _accept(self, event: OrderNotice | ServiceAlert) -> None:
        if self._closed:
            self._counts["dropped"] += 1
            return
        if isinstance(event, ServiceAlert):
            text = self._alert_text(event)
            if text is None:
                return
        else:
            text = compose_message(event)
        self._put(text)

    def _alert_text(self, alert: ServiceAlert) -> str | None:
        """The alert's text, or None when it repeats a key already sent inside the window."""
        key = alert.key or f"{alert.kind}:{alert.text}"
        now = self._clock()
        window = self._windows.get(key)
        if window is not None and now - window.started < self._alert_window:
            window.collapsed += 1
            self._counts["collapsed"] += 1
            return None
        self._forget_old_windows(now)
        self._windows[key] = _AlertWindow(started=now)
        text = compose_message(alert)
        if window is not None and window.collapsed:
            sep = "\n" if "\n\n" in text else "\n\n"
            text = truncate(f"{text}{sep}Collapsed: {window.collapsed} repeats since the last one")
        return text

    def _forget_old_windows(self, now: float) -> None:
        if len(self._windows) > 1000:
            self._windows = {
                key: window
                for key, window in self._windows.items()
                if now - window.started < self._alert_window
            }

    def _put(self, text: str) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self._queue.task_done()
            self._counts["dropped"] += 1
        self._queue.put_nowait(text)

    def _build_bot(self) -> ExtBot:
        timeout = self._http_timeout
        request = HTTPXRequest(
            connection_pool_size=4,
            connect_timeout=timeout,
            read_timeout=timeout,
            write_timeout=timeout,
            pool_timeout=timeout,
        )
        return ExtBot(
            self._token,
            base_url=f"{self._api_url}/bot",
            base_file_url=f"{self._api_url}/file/bot",
            request=request,
            rate_limiter=AIORateLimiter(max_retries=self._max_retries),
        )

    async def _drain(self) -> None:
        await self._initialize_bot()
        while True:
            text = await self._queue.get()
            try:
                await self._send(text)
            except asyncio.CancelledError:  # stopped mid-send: the message is lost
                self._counts["dropped"] += 1
                raise
            finally:
                self._queue.task_done()

    async def _initialize_bot(self) -> None:
        """getMe once, to say in the log whether the token works; sending does not depend on
        it."""
        try:
            await self._bot.initialize()
            logger.info("Telegram notifier ready as @%s", self._bot.username)
        except Exception as e:  # noqa: BLE001 - the drain task must survive anything
            logger.warning("Telegram Bot API not usable yet: %s", describe_error(e))

    async def _send(self, text: str) -> None:
        try:
            await self._bot.send_message(chat_id=self._chat_id, text=text)
        except RetryAfter as e:
            self._failed("flood control still on after %d retries: %s", self._max_retries, e)
        except BadRequest as e:  # a NetworkError subclass: must come first
            self._failed("Bot API refused the message: %s", e)
        except TimedOut as e:
            self._failed("Bot API did not answer in %.1f s: %s", self._http_timeout, e)
        except TelegramError as e:
            self._failed("Bot API error: %s", e)
        except Exception as e:  # noqa: BLE001 - the drain task must survive anything
            self._failed("unexpected error: %s", e)
        else:
            self._counts["sent"] += 1

    def _failed(self, message: str, *args) -> None:
        self._counts["failed"] += 1
        shown = [describe_error(arg) if isinstance(arg, BaseException) else arg for arg in args]
        logger.warning("Telegram notice not sent, " + message, *shown)

    def _discard_queued(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
            self._counts["dropped"] += 1

    async def _close_bot(self) -> None:
        try:
            await asyncio.wait_for(self._bot.shutdown(), self._stop_timeout)
        except Exception as e:  # noqa: BLE001 - stopping must not fail on a side channel
            logger.warning("Telegram client did not close cleanly: %s", describe_error(e))


def describe_error(error: BaseException) -> str:
    """An exception as `Type: message`, token removed, for a log line."""
    return f"{type(error).__name__}: {redact(str(error))}"
