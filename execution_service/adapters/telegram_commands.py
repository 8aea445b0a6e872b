"""Telegram commands (SPEC §13): python-telegram-bot's Application, long polling (getUpdates)
inside the daemon's event loop.

Only chats in TELEGRAM_ADMIN_CHAT_IDS are answered; a command from any other chat changes
nothing, gets no answer, and is logged with its chat id. Polling and answering run in the
Application's own tasks with their own HTTP clients, so a slow or failing Bot API costs
answers, never an order's time. The token is redacted from every log record (telegram.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters
from telegram.request import HTTPXRequest

from execution_service.adapters.telegram import describe_error
from execution_service.domain.backoff import Backoff
from execution_service.domain.text import single_line
from execution_service.redaction import protect

logger = logging.getLogger(__name__)
BOT_API_BACKOFF = Backoff(1.0, 60.0)  # while the Bot API is not usable


def asked_by(update: Update) -> str:
    user = update.effective_user
    name = (user.username or user.full_name) if user is not None else "unknown"
    return f"telegram:{update.effective_chat.id}:{single_line(name)[:64]}"


class TelegramCommands:
    """start() returns at once; the bot comes up in the background (retrying a Bot API that
    is down) and stop() takes it down."""

    def __init__(self, token: str, api_url: str, admin_chat_ids: tuple[int, ...], desk, *,
                 poll_timeout: float = 10.0, http_timeout: float = 5.0):
        protect([token])  # before the bot exists: it logs its URL, token included
        self._desk = desk
        self._admins = admin_chat_ids
        self._poll_timeout = poll_timeout
        api_url = api_url.rstrip("/")
        self._app = (
            Application.builder().token(token)
            .base_url(f"{api_url}/bot").base_file_url(f"{api_url}/file/bot")
            .request(HTTPXRequest(connect_timeout=http_timeout, read_timeout=http_timeout,
                                  write_timeout=http_timeout, pool_timeout=http_timeout))
            .get_updates_request(HTTPXRequest(connect_timeout=http_timeout,
                                              read_timeout=poll_timeout + http_timeout))
            .build())
        admins = filters.Chat(chat_id=list(admin_chat_ids))
        for command in desk.COMMANDS:
            self._app.add_handler(CommandHandler(command, self._answer, filters=admins))
        self._app.add_handler(MessageHandler(filters.COMMAND & ~admins, self._refuse))
        self._app.add_error_handler(self._on_error)
        self._task: asyncio.Task | None = None
        self._polling = False

    @classmethod
    def from_settings(cls, settings, desk) -> TelegramCommands:
        return cls(settings.TELEGRAM_BOT_TOKEN, settings.TELEGRAM_API_URL,
                   settings.admin_chat_ids, desk)

    @property
    def polling(self) -> bool:
        return self._polling

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._come_up(), name="telegram-commands")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(Exception):  # stopping must not fail on a side channel
            if self._app.updater.running:
                await asyncio.wait_for(self._app.updater.stop(), 5)
            if self._app.running:
                await asyncio.wait_for(self._app.stop(), 5)
            await asyncio.wait_for(self._app.shutdown(), 5)
        self._polling = False

    async def _come_up(self) -> None:
        attempt = 0
        while True:
            try:
                await self._app.initialize()  # getMe
                break
            except TelegramError as e:
                attempt += 1
                wait = BOT_API_BACKOFF.after(attempt)
                logger.warning("Telegram commands: Bot API not usable (%s); retry in %.0fs",
                               describe_error(e), wait)
                await asyncio.sleep(wait)
        await self._app.start()
        await self._app.updater.start_polling(timeout=self._poll_timeout,
                                              error_callback=self._on_poll_error)
        self._polling = True
        logger.info("Telegram commands: answering chats %s as @%s",
                    ", ".join(str(chat) for chat in self._admins), self._app.bot.username)

    async def _answer(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        command = message.text.split()[0].lstrip("/").split("@")[0].lower()
        by = asked_by(update)
        logger.info("Telegram /%s from %s", command, by)
        text = await self._desk.answer(command, list(context.args or []), by)
        await message.reply_text(text)

    async def _refuse(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        words = (update.effective_message.text or "?").split() if update.effective_message \
            else ["?"]
        text = single_line(words[0][:64]) if words else "?"
        logger.warning("Telegram command %r from chat %s (%s) ignored: not an admin chat",
                       text, update.effective_chat.id if update.effective_chat else "?",
                       asked_by(update) if update.effective_chat else "?")

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        logger.warning("Telegram command failed: %s", describe_error(context.error))

    def _on_poll_error(self, error: TelegramError) -> None:
        logger.warning("Telegram commands: polling failed (%s); retrying", describe_error(error))
