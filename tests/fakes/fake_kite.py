"""A small fake Kite Connect v3 server for tests: the order endpoints kiteconnect uses.

It runs a stdlib ThreadingHTTPServer on 127.0.0.1 (a free port) in a daemon thread; the test
starts and stops it. It checks `X-Kite-Version: 3` and `Authorization: token key:token` on
every request, records each placement's exact form fields and arrival time, answers errors
the way Kite does ({"status": "error", "message", "error_type"} with the HTTP status), and has
hooks to move an order through Kite's statuses and trades.

    fake = FakeKite().start()
    kite_root = fake.url
    ...
    fake.stop()
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

API_KEY = "fake_api_key"
ACCESS_TOKEN = "fake_access_token_s3cr3t"
API_SECRET = "fake_api_secret_s3cr3t"
IST = timezone(timedelta(hours=5, minutes=30))
NOT_FOUND = "Couldn't find that `order_id`."
HTTP_STATUS = {"InputException": 400, "OrderException": 400, "PermissionException": 403,
               "TokenException": 403, "NetworkException": 503, "DataException": 502,
               "GeneralException": 500, "MarginException": 400, "HoldingException": 400}
TERMINAL = ("COMPLETE", "REJECTED", "CANCELLED")


class _DropConnection(Exception):
    """Close the connection without answering."""


class KiteError(Exception):
    def __init__(self, error_type: str, message: str, status: int | None = None):
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status or HTTP_STATUS.get(error_type, 500)


@dataclass
class Placement:
    """One POST /orders/{variety} as it arrived."""

    variety: str
    form: dict[str, str]
    arrived: float  # time.monotonic()
    order_id: str | None = None


@dataclass
class FakeOrder:
    order_id: str
    variety: str
    form: dict[str, str]
    placed_at: datetime
    history: list[dict] = field(default_factory=list)
    trades: list[dict] = field(default_factory=list)
    hidden_trades: list[dict] = field(default_factory=list)  # filled, not yet in the trade book

    @property
    def current(self) -> dict:
        return self.history[-1]


class FakeKite:
    def __init__(self, api_key: str = API_KEY, access_token: str = ACCESS_TOKEN,
                 api_secret: str = API_SECRET):
        self.api_key = api_key
        self.access_token = access_token
        self.api_secret = api_secret
        self.request_tokens: set[str] = set()  # issued by a "login", each usable once
        self.sessions_issued: list[str] = []  # access tokens made by /session/token
        self.placements: list[Placement] = []
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self.header_problems: list[str] = []
        self.orders: dict[str, FakeOrder] = {}
        self.reject_reason: str | None = None  # every new order goes REJECTED with this
        self.hold_cancels = False  # DELETE leaves CANCEL PENDING until confirm_cancel()
        self.modifications: list[tuple[str, dict[str, str]]] = []  # (order id, PUT form)
        self.market_price = 100.0
        self.gtts: dict[int, dict] = {}  # trigger id -> the GTT as GET /gtt/triggers/{id}
        self.gtt_requests: list[tuple[str, dict]] = []  # (method, form) of POST/PUT
        self._gtt_ids = itertools.count(1101)
        self._errors: dict[str, list[KiteError]] = {}
        self._hangs: list[float] = []
        self._on_arrival: dict[str, Callable[[str], object]] = {}  # tag -> what befalls it
        self._drops = 0
        self._ids = itertools.count(250101000000001)
        self._trade_ids = itertools.count(80000001)
        self._lock = threading.RLock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> FakeKite:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.02,),
                                        name="fake-kite", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()  # let any hanging handler finish
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- test hooks: what the next requests get ---------------------------------------

    def fail_next(self, route: str, error_type: str, message: str = "error",
                  status: int | None = None, times: int = 1) -> None:
        """The next `times` requests to `route` ("place", "history", "trades", "orders",
        "cancel", "modify", "profile") answer this Kite error."""
        with self._lock:
            self._errors.setdefault(route, []).extend(
                KiteError(error_type, message, status) for _ in range(times))

    def throttle_next(self, route: str = "place", times: int = 1) -> None:
        """Kite's rate limit answer: 429 Too many requests (a NetworkException)."""
        self.fail_next(route, "NetworkException", "Too many requests", 429, times)

    def hang_next_place(self, seconds: float = 5.0) -> None:
        """The next placement creates the order, then answers only after `seconds` (or at
        stop()): the client times out while the order exists."""
        with self._lock:
            self._hangs.append(seconds)

    def on_arrival(self, tag: str, befall: Callable[[str], object]) -> None:
        """When the order tagged `tag` is placed, `befall(order_id)` at once (`fill`, `reject`
        …): what the venue does to it then no longer races the daemon's order timeout."""
        with self._lock:
            self._on_arrival[tag] = befall

    def drop_next_place(self) -> None:
        """The next placement creates the order, then the connection closes unanswered."""
        with self._lock:
            self._drops += 1

    def issue_request_token(self) -> str:
        """What Kite's redirect carries after a login: single-use."""
        token = f"req_{next(self._ids)}"
        with self._lock:
            self.request_tokens.add(token)
        return token

    def create_session(self, form: dict[str, str]) -> dict:
        """POST /session/token: checksum = sha256(api_key + request_token + api_secret)."""
        request_token = form.get("request_token", "")
        expected = hashlib.sha256(
            (self.api_key + request_token + self.api_secret).encode()).hexdigest()
        with self._lock:
            if form.get("api_key") != self.api_key or form.get("checksum") != expected \
                    or request_token not in self.request_tokens:
                raise KiteError("TokenException", "Token is invalid or has expired.")
            self.request_tokens.discard(request_token)
            self.access_token = f"access_{next(self._ids)}"
            self.sessions_issued.append(self.access_token)
        return {"user_id": "AB1234", "user_name": "Fake Trader", "api_key": self.api_key,
                "access_token": self.access_token, "public_token": "pub",
                "login_time": datetime.now(IST).strftime("%Y-%m-%d %H:%M:%S")}

    def expire_session(self) -> None:
        """From now on every request answers TokenException (403)."""
        self.access_token = self.access_token + "-expired"

    # --- test hooks: move an order through Kite's statuses -----------------------------

    def set_status(self, order_id: str, status: str, status_message: str | None = None
                   ) -> None:
        with self._lock:
            self._append(self.orders[order_id], status=status, status_message=status_message)

    def fill(self, order_id: str, quantity: int, price: float | None = None,
             in_trade_book: bool = True) -> dict:
        """One execution: a trade, filled_quantity and average_price up, OPEN or COMPLETE.
        `in_trade_book=False` keeps the trade out of /trades until release_trades()."""
        with self._lock:
            order = self.orders[order_id]
            price = self._fill_price(order) if price is None else price
            trade = self._trade(order, quantity, price)
            (order.trades if in_trade_book else order.hidden_trades).append(trade)
            current = order.current
            filled = current["filled_quantity"] + quantity
            average = (current["average_price"] * current["filled_quantity"]
                       + price * quantity) / filled
            status = "COMPLETE" if filled >= current["quantity"] else "OPEN"
            self._append(order, status=status, filled_quantity=filled,
                         pending_quantity=current["quantity"] - filled,
                         average_price=round(average, 4))
            return trade

    def release_trades(self, order_id: str) -> None:
        with self._lock:
            order = self.orders[order_id]
            order.trades.extend(order.hidden_trades)
            order.hidden_trades.clear()

    def reject(self, order_id: str, status_message: str) -> None:
        self.set_status(order_id, "REJECTED", status_message)

    def cancel(self, order_id: str) -> None:
        with self._lock:
            order = self.orders[order_id]
            current = order.current
            self._append(order, status="CANCELLED", status_message=None, pending_quantity=0,
                         cancelled_quantity=current["quantity"] - current["filled_quantity"])

    def cancel_requested(self, order_id: str) -> bool:
        with self._lock:
            return self.orders[order_id].current["status"] == "CANCEL PENDING"

    def confirm_cancel(self, order_id: str) -> None:
        self.cancel(order_id)

    def order(self, order_id: str) -> dict:
        with self._lock:
            return dict(self.orders[order_id].current)

    # --- the API (called from handler threads) -----------------------------------------

    def check_headers(self, headers) -> None:
        if headers.get("X-Kite-Version") != "3":
            self.header_problems.append(f"X-Kite-Version {headers.get('X-Kite-Version')!r}")
            raise KiteError("InputException", "Missing or invalid X-Kite-Version header")
        if headers.get("Authorization") != f"token {self.api_key}:{self.access_token}":
            raise KiteError("TokenException", "Incorrect `api_key` or `access_token`.")

    def take_error(self, route: str) -> None:
        with self._lock:
            queued = self._errors.get(route)
            error = queued.pop(0) if queued else None
        if error is not None:
            raise error

    def place(self, variety: str, form: dict[str, str]) -> tuple[str, float]:
        """Create the order; returns its id and how long to hang before answering."""
        with self._lock:
            placement = Placement(variety, form, time.monotonic())
            self.placements.append(placement)
            self.take_error("place")
            order_id = str(next(self._ids))
            placement.order_id = order_id
            order = FakeOrder(order_id, variety, form, datetime.now(IST).replace(microsecond=0))
            self.orders[order_id] = order
            self._append(order, status="PUT ORDER REQ RECEIVED", **self._initial(form))
            self._append(order, status="VALIDATION PENDING")
            self._append(order, status="OPEN PENDING")
            if self.reject_reason is not None:
                self._append(order, status="REJECTED", status_message=self.reject_reason)
            else:
                self._append(order, status="OPEN", exchange_order_id=f"13{order_id[-8:]}")
            befall = self._on_arrival.pop(form.get("tag", ""), None)
            if befall is not None:
                befall(order_id)
            return order_id, self._hangs.pop(0) if self._hangs else 0.0

    def wait_released(self, seconds: float) -> None:
        self._release.wait(seconds)

    def take_drop(self) -> None:
        with self._lock:
            drop, self._drops = self._drops > 0, max(0, self._drops - 1)
        if drop:
            raise _DropConnection()

    def history(self, order_id: str) -> list[dict]:
        with self._lock:
            self.take_error("history")
            return [dict(entry) for entry in self._known(order_id).history]

    def order_trades(self, order_id: str) -> list[dict]:
        with self._lock:
            self.take_error("trades")
            return [dict(trade) for trade in self._known(order_id).trades]

    def all_orders(self) -> list[dict]:
        with self._lock:
            self.take_error("orders")
            return [dict(order.current) for order in self.orders.values()]

    def all_trades(self) -> list[dict]:
        with self._lock:
            self.take_error("trades")
            return [dict(trade) for order in self.orders.values() for trade in order.trades]

    def cancel_order(self, order_id: str) -> str:
        with self._lock:
            self.take_error("cancel")
            order = self._known(order_id)
            status = order.current["status"]
            if status in TERMINAL:
                raise KiteError("InputException",
                                f"Order cannot be cancelled as it is {status.lower()}.")
            if self.hold_cancels:
                self._append(order, status="CANCEL PENDING")
            else:
                self.cancel(order_id)
            return order_id

    def modify_order(self, order_id: str, form: dict[str, str]) -> str:
        """Kite's modify: new quantity, price, trigger price on a live order."""
        with self._lock:
            self.take_error("modify")
            order = self._known(order_id)
            current = order.current
            if current["status"] in TERMINAL:
                raise KiteError("InputException",
                                f"Order cannot be modified as it is {current['status'].lower()}.")
            quantity = int(form.get("quantity", current["quantity"]))
            if quantity < current["filled_quantity"]:
                raise KiteError("InputException", "Quantity cannot be below filled quantity.")
            changes = {"quantity": quantity,
                       "pending_quantity": quantity - current["filled_quantity"]}
            for name in ("price", "trigger_price"):
                if name in form:
                    changes[name] = float(form[name])
                    order.form[name] = form[name]
            order.form["quantity"] = str(quantity)
            self.modifications.append((order_id, dict(form)))
            self._append(order, status="MODIFY PENDING")
            self._append(order, status="OPEN", **changes)
            return order_id

    # --- GTTs (Kite's /gtt/triggers shapes) -------------------------------------------

    def place_gtt(self, form: dict[str, str]) -> dict:
        with self._lock:
            self.gtt_requests.append(("POST", form))
            self.take_error("gtt_place")
            trigger_id = next(self._gtt_ids)
            now = _stamp(datetime.now(IST))
            self.gtts[trigger_id] = {
                "id": trigger_id, "user_id": "AB1234", "parent_trigger": None,
                "created_at": now, "updated_at": now, "expires_at": now, "status": "active",
                "meta": {}, **self._gtt_body(form)}
            return {"trigger_id": trigger_id}

    def modify_gtt(self, trigger_id: str, form: dict[str, str]) -> dict:
        with self._lock:
            self.gtt_requests.append(("PUT", form))
            self.take_error("gtt_modify")
            gtt = self._known_gtt(trigger_id)
            if gtt["status"] != "active":
                raise KiteError("InputException", f"GTT is {gtt['status']}: cannot modify")
            gtt.update(self._gtt_body(form), updated_at=_stamp(datetime.now(IST)))
            return {"trigger_id": gtt["id"]}

    def delete_gtt(self, trigger_id: str) -> dict:
        with self._lock:
            self.take_error("gtt_delete")
            gtt = self._known_gtt(trigger_id)
            if gtt["status"] != "active":
                raise KiteError("InputException", f"GTT is {gtt['status']}: cannot delete")
            gtt["status"] = "deleted"
            return {"trigger_id": gtt["id"]}

    def gtt(self, trigger_id: str) -> dict:
        with self._lock:
            self.take_error("gtt_get")
            return json.loads(json.dumps(self._known_gtt(trigger_id)))

    def all_gtts(self) -> list[dict]:
        with self._lock:
            self.take_error("gtt_list")
            return json.loads(json.dumps(list(self.gtts.values())))

    def trigger_gtt(self, trigger_id: int, leg: int) -> str:
        """The market crossed the trigger of leg `leg`: Kite places that leg's order (and
        only that one) and the GTT is triggered. Returns the placed order's id."""
        with self._lock:
            gtt = self._known_gtt(str(trigger_id))
            assert gtt["status"] == "active", gtt["status"]
            order = gtt["orders"][leg]
            form = {name: str(order[name]) for name in (
                "exchange", "tradingsymbol", "transaction_type", "quantity", "order_type",
                "product", "price")}
            order_id, _hang = self.place("regular", {**form, "validity": "DAY"})
            order["result"] = {
                "triggered_at": float(gtt["condition"]["trigger_values"][leg]),
                "order_result": {"order_id": order_id, "rejection_reason": "",
                                 "status": "success"},
                "timestamp": _stamp(datetime.now(IST)), "validity": "DAY",
                "quantity": order["quantity"], "price": order["price"],
                "transaction_type": order["transaction_type"], "order_type": "LIMIT"}
            gtt["status"] = "triggered"
            return order_id

    def move_market(self, price: float) -> list[str]:
        """The last price moves to `price`: every active GTT whose trigger it crosses (from
        the side of the GTT's last price) triggers. Returns the orders placed."""
        with self._lock:
            self.market_price = price
            placed = []
            for trigger_id, gtt in list(self.gtts.items()):
                if gtt["status"] != "active":
                    continue
                condition = gtt["condition"]
                for leg, trigger in enumerate(condition["trigger_values"]):
                    above = trigger >= condition["last_price"]
                    if (above and price >= trigger) or (not above and price <= trigger):
                        placed.append(self.trigger_gtt(trigger_id, leg))
                        break
            return placed

    def triggered_orders(self, trigger_id: int) -> list[str]:
        """The ids of the orders a triggered GTT placed (one at most)."""
        with self._lock:
            return [order["result"]["order_result"]["order_id"]
                    for order in self._known_gtt(str(trigger_id))["orders"] if order["result"]]

    def set_gtt_status(self, trigger_id: int, status: str) -> None:
        with self._lock:
            self._known_gtt(str(trigger_id))["status"] = status

    def _known_gtt(self, trigger_id: str) -> dict:
        gtt = self.gtts.get(int(trigger_id))
        if gtt is None:
            raise KiteError("InputException", "Invalid trigger ID.", 404)
        return gtt

    @staticmethod
    def _gtt_body(form: dict[str, str]) -> dict:
        kind = form["type"]
        condition = json.loads(form["condition"])
        orders = json.loads(form["orders"])
        triggers = condition["trigger_values"]
        if kind not in ("single", "two-leg") or len(triggers) != len(orders) or \
                len(triggers) != (1 if kind == "single" else 2):
            raise KiteError("InputException", "Invalid trigger values or orders.")
        if kind == "two-leg" and not triggers[0] < condition["last_price"] < triggers[1]:
            raise KiteError("InputException", "Trigger values must straddle the last price.")
        return {"type": kind,
                "condition": {**condition, "instrument_token": 408065},
                "orders": [{**order, "result": None} for order in orders]}

    def ltp(self, instruments: list[str]) -> dict:
        return {key: {"instrument_token": 408065, "last_price": self.market_price}
                for key in instruments}

    def profile(self) -> dict:
        self.take_error("profile")
        return {"user_id": "AB1234", "user_name": "Fake Trader", "broker": "ZERODHA"}

    # --- internals ---------------------------------------------------------------------

    def _known(self, order_id: str) -> FakeOrder:
        order = self.orders.get(order_id)
        if order is None:
            raise KiteError("GeneralException", NOT_FOUND, 400)
        return order

    def _initial(self, form: dict[str, str]) -> dict:
        stamp = _stamp(datetime.now(IST))
        quantity = int(form.get("quantity", "0"))
        return {
            "account_id": "AB1234", "placed_by": "AB1234", "order_id": None,
            "exchange_order_id": None, "parent_order_id": None, "status_message": None,
            "status_message_raw": None, "order_timestamp": stamp, "exchange_timestamp": None,
            "exchange_update_timestamp": None, "variety": form.get("variety", "regular"),
            "exchange": form.get("exchange"), "tradingsymbol": form.get("tradingsymbol"),
            "instrument_token": 408065, "order_type": form.get("order_type"),
            "transaction_type": form.get("transaction_type"),
            "validity": form.get("validity", "DAY"), "product": form.get("product"),
            "quantity": quantity, "disclosed_quantity": 0,
            "price": float(form.get("price", 0)),
            "trigger_price": float(form.get("trigger_price", 0)),
            "average_price": 0, "filled_quantity": 0, "pending_quantity": quantity,
            "cancelled_quantity": 0, "market_protection": 0, "meta": {},
            "tag": form.get("tag"), "tags": [form["tag"]] if form.get("tag") else [],
            "guid": f"fake-{time.monotonic_ns()}",
        }

    def _append(self, order: FakeOrder, **changes) -> None:
        entry = dict(order.history[-1]) if order.history else {}
        entry.update(changes)
        entry["order_id"] = order.order_id
        entry["exchange_update_timestamp"] = _stamp(datetime.now(IST))
        order.history.append(entry)

    def _fill_price(self, order: FakeOrder) -> float:
        limit = float(order.form.get("price", 0) or 0)
        return limit if limit > 0 else self.market_price

    def _trade(self, order: FakeOrder, quantity: int, price: float) -> dict:
        now = _stamp(datetime.now(IST))
        return {
            "trade_id": str(next(self._trade_ids)), "order_id": order.order_id,
            "exchange": order.form.get("exchange"),
            "tradingsymbol": order.form.get("tradingsymbol"), "instrument_token": 408065,
            "product": order.form.get("product"), "average_price": price,
            "quantity": quantity, "exchange_order_id": order.current.get("exchange_order_id"),
            "transaction_type": order.form.get("transaction_type"), "fill_timestamp": now,
            "order_timestamp": now[11:], "exchange_timestamp": now,
        }


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeKite/3"

    def log_message(self, format, *args):
        return  # keep test output quiet

    @property
    def fake(self) -> FakeKite:
        return self.server.fake  # type: ignore[attr-defined]

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_DELETE(self):
        self._serve("DELETE")

    def do_PUT(self):
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        path = urlparse(self.path).path.rstrip("/")
        parts = path.strip("/").split("/")
        self.fake.requests.append((method, path))
        try:
            if (method, parts) == ("POST", ["session", "token"]):  # no session yet: no header
                data = self.fake.create_session(self._form())
            else:
                self.fake.check_headers(self.headers)
                data = self._route(method, parts)
        except KiteError as e:
            self._send(e.status, {"status": "error", "message": e.message,
                                  "data": None, "error_type": e.error_type})
            return
        except _DropConnection:
            self.close_connection = True
            return
        self._send(200, {"status": "success", "data": data})

    def _route(self, method: str, parts: list[str]):
        fake = self.fake
        match method, parts:
            case "POST", ["orders", variety]:
                order_id, hang = fake.place(variety, self._form())
                fake.take_drop()
                if hang:
                    fake.wait_released(hang)
                return {"order_id": order_id}
            case "GET", ["orders"]:
                return fake.all_orders()
            case "GET", ["trades"]:
                return fake.all_trades()
            case "GET", ["orders", order_id]:
                return fake.history(order_id)
            case "GET", ["orders", order_id, "trades"]:
                return fake.order_trades(order_id)
            case "PUT", ["orders", _variety, order_id]:
                return {"order_id": fake.modify_order(order_id, self._form())}
            case "DELETE", ["orders", _variety, order_id]:
                return {"order_id": fake.cancel_order(order_id)}
            case _, ["gtt" | "quote" | "user", *_]:
                return self._account_route(method, parts)
        raise KiteError("GeneralException", f"no route {method} /{'/'.join(parts)}", 404)

    def _account_route(self, method: str, parts: list[str]):
        """The profile, GTTs, and the last price a GTT's placement asks for."""
        fake = self.fake
        match method, parts:
            case "GET", ["user", "profile"]:
                return fake.profile()
            case "GET", ["gtt", "triggers"]:
                return fake.all_gtts()
            case "POST", ["gtt", "triggers"]:
                return fake.place_gtt(self._form())
            case "GET", ["gtt", "triggers", trigger_id]:
                return fake.gtt(trigger_id)
            case "PUT", ["gtt", "triggers", trigger_id]:
                return fake.modify_gtt(trigger_id, self._form())
            case "DELETE", ["gtt", "triggers", trigger_id]:
                return fake.delete_gtt(trigger_id)
            case "GET", ["quote", "ltp"]:
                return fake.ltp(parse_qs(urlparse(self.path).query).get("i", []))
        raise KiteError("GeneralException", f"no route {method} /{'/'.join(parts)}", 404)

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8")
        return {key: values[-1] for key, values in parse_qs(body).items()}

    def _send(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a hang on purpose)
