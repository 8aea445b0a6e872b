"""A fake Telegram Bot API on 127.0.0.1 (stdlib only), for the real python-telegram-bot client.

    with FakeTelegram() as fake:
        notifier = TelegramNotifier(token, "42", fake.url)   # fake.url has no /bot part
        ...
        fake.fail_next(1, status=429, retry_after=1)       # switch failure modes at run time
        assert [m.text for m in fake.sent] == [...]

It answers POST /bot<token>/getMe and /bot<token>/sendMessage with the real Bot API JSON shapes,
records every sendMessage (token used, chat id, text, all parameters), and can answer 429/500/400
for the next N sendMessage calls or hang a method until told to stop hanging or shut down.
For long polling it serves deleteWebhook and getUpdates (offset, timeout, limit as the Bot API
does): `push_command(chat_id, "/halt stop now", username="desk")` queues an update that the
next getUpdates delivers.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs

BOT_USER = {
    "id": 123456,
    "is_bot": True,
    "first_name": "Fake Execution Bot",
    "username": "fake_execution_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}


@dataclass(frozen=True)
class SentMessage:
    token: str
    chat_id: str
    text: str
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Call:
    token: str
    method: str
    at: float  # time.monotonic() when the request arrived


@dataclass
class _Failure:
    remaining: int
    status: int
    description: str
    retry_after: int | None = None


class FakeTelegram:
    """Start with `with FakeTelegram() as fake:` (or start()/stop())."""

    def __init__(self, valid_token: str | None = None) -> None:
        self.valid_token = valid_token  # None: any token is accepted
        self.sent: list[SentMessage] = []
        self.calls: list[Call] = []
        self._failures: list[_Failure] = []
        self._hanging: set[str] = set()
        self._hung = 0
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._updates: list[dict] = []
        self._update_ids = itertools.count(1)
        self._new_update = threading.Condition(self._lock)
        self._stopping = False
        self.confirmed_offset = 0  # the highest offset getUpdates was called with
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeTelegram:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()  # hanging handlers return without answering
        with self._lock:
            self._stopping = True
            self._new_update.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The Bot API base URL, without the /bot part (TELEGRAM_API_URL)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- failure modes ---------------------------------------------------------------------

    def fail_next(
        self,
        count: int,
        status: int = 500,
        retry_after: int | None = None,
        description: str | None = None,
    ) -> None:
        """Answer the next `count` sendMessage calls with `status` (429 carries retry_after)."""
        if status == HTTPStatus.TOO_MANY_REQUESTS and retry_after is None:
            retry_after = 1
        if description is None:
            description = _default_description(status, retry_after)
        with self._lock:
            self._failures.append(_Failure(count, status, description, retry_after))

    def hang(self, method: str = "sendMessage") -> None:
        """Never answer `method` until stop_hanging() or stop()."""
        with self._lock:
            self._hanging.add(method)
            self._release.clear()

    def stop_hanging(self) -> None:
        with self._lock:
            self._hanging.clear()
        self._release.set()

    @property
    def hung_requests(self) -> int:
        """Requests received and never answered because of hang()."""
        return self._hung

    def push_command(self, chat_id: int, text: str, username: str = "operator") -> int:
        """A message from a user in a private chat (its id is `chat_id`); returns update_id."""
        with self._lock:
            update_id = next(self._update_ids)
            command = text.split()[0] if text.startswith("/") else ""
            sender = {"id": chat_id, "is_bot": False, "first_name": "Operator",
                      "username": username}
            self._updates.append({"update_id": update_id, "message": {
                "message_id": update_id, "date": int(time.time()), "chat": _chat(str(chat_id)),
                "from": sender, "text": text,
                "entities": [{"type": "bot_command", "offset": 0, "length": len(command)}]
                if command else []}})
            self._new_update.notify_all()
        return update_id

    def sent_to(self, chat_id: int | str) -> list[str]:
        with self._lock:
            return [m.text for m in self.sent if m.chat_id == str(chat_id)]

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.method == method]

    # --- used by the handler ---------------------------------------------------------------

    def _answer(self, token: str, method: str, params: dict) -> tuple[int, dict] | None:
        """The status and JSON body to answer with; None: hang."""
        with self._lock:
            self.calls.append(Call(token, method, time.monotonic()))
            if method in self._hanging:
                self._hung += 1
                return None
            if self.valid_token is not None and token != self.valid_token:
                return _error(HTTPStatus.UNAUTHORIZED, "Unauthorized")
            if method == "getMe":
                return HTTPStatus.OK, {"ok": True, "result": BOT_USER}
            if method == "sendMessage":
                return self._send_message(token, params)
            if method == "deleteWebhook":
                return HTTPStatus.OK, {"ok": True, "result": True}
            if method == "getUpdates":
                return self._get_updates(params)
            return _error(HTTPStatus.NOT_FOUND, "Not Found")

    def _get_updates(self, params: dict) -> tuple[int, dict]:
        """Called holding the lock; waiting releases it."""
        offset = int(params.get("offset") or 0)
        self.confirmed_offset = max(self.confirmed_offset, offset)
        timeout = min(float(params.get("timeout") or 0), 5.0)
        limit = int(params.get("limit") or 100)
        deadline = time.monotonic() + timeout

        def pending() -> list[dict]:
            return [u for u in self._updates if u["update_id"] >= offset][:limit]

        while not pending() and not self._stopping and time.monotonic() < deadline:
            self._new_update.wait(max(0.0, deadline - time.monotonic()))
        return HTTPStatus.OK, {"ok": True, "result": pending()}

    def _send_message(self, token: str, params: dict) -> tuple[int, dict]:
        failure = next((f for f in self._failures if f.remaining > 0), None)
        if failure is not None:
            failure.remaining -= 1
            return _error(failure.status, failure.description, failure.retry_after)
        chat_id, text = str(params.get("chat_id", "")), str(params.get("text", ""))
        if not chat_id or not text:
            return _error(HTTPStatus.BAD_REQUEST, "Bad Request: message text is empty")
        self.sent.append(SentMessage(token, chat_id, text, dict(params)))
        message = {
            "message_id": len(self.sent),
            "date": int(time.time()),
            "chat": _chat(chat_id),
            "from": BOT_USER,
            "text": text,
        }
        return HTTPStatus.OK, {"ok": True, "result": message}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # http.server names it
        fake: FakeTelegram = self.server.fake
        token, method = _split_path(self.path)
        params = self._read_params()
        if token is None:
            self._reply(*_error(HTTPStatus.NOT_FOUND, "Not Found"))
            return
        answer = fake._answer(token, method, params)
        if answer is None:
            fake._release.wait()
            self.close_connection = True
            return
        self._reply(*answer)

    do_GET = do_POST  # the Bot API accepts both

    def _read_params(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        kind = self.headers.get("Content-Type", "")
        if kind.startswith("application/json"):
            return json.loads(body or b"{}")
        pairs = parse_qs(body.decode(), keep_blank_values=True)
        return {key: values[-1] for key, values in pairs.items()}

    def _reply(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (timeout) before we answered
            self.close_connection = True

    def log_message(self, *args) -> None:  # the path holds the token: never print it
        return


def _split_path(path: str) -> tuple[str | None, str]:
    parts = path.split("?", 1)[0].strip("/").split("/")
    if len(parts) != 2 or not parts[0].startswith("bot"):
        return None, ""
    return parts[0].removeprefix("bot"), parts[1]


def _error(status: int, description: str, retry_after: int | None = None) -> tuple[int, dict]:
    payload = {"ok": False, "error_code": int(status), "description": description}
    if retry_after is not None:
        payload["parameters"] = {"retry_after": retry_after}
    return int(status), payload


def _default_description(status: int, retry_after: int | None) -> str:
    if status == HTTPStatus.TOO_MANY_REQUESTS:
        return f"Too Many Requests: retry after {retry_after}"
    if status == HTTPStatus.BAD_REQUEST:
        return "Bad Request: chat not found"
    return "Internal Server Error"


def _chat(chat_id: str) -> dict:
    if chat_id.lstrip("-").isdigit():
        number = int(chat_id)
        return {
            "id": number,
            "type": "private" if number > 0 else "supergroup",
            **({"first_name": "Trader"} if number > 0 else {"title": "Trading Desk"}),
        }
    return {
        "id": -1001234567890,
        "type": "channel",
        "title": "Trading Desk",
        "username": chat_id.removeprefix("@"),
    }
