"""Zerodha through the official kiteconnect client (Kite Connect v3 REST).

The client is synchronous (requests), so every call runs in a worker thread
(`asyncio.to_thread`) and the event loop never blocks. The adapter translates; it does not
decide: no polling, no retries, no timeout policy (those live in the order tracker). The one
rule it enforces itself is the venue's: at most KITE_ORDERS_PER_SECOND order requests per
second, queued, never dropped.

Neither the api key nor the access token is ever logged: they live only inside the client,
which sends them in the Authorization header (its debug logging stays off).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import requests
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kite_errors
from urllib3.exceptions import NewConnectionError

from brokers.base import Broker, BrokerOrder, BrokerStatus, OrderRequest
from brokers.zerodha_exits import GttExits
from brokers.zerodha_gtt import parse_leg_order_id
from brokers.zerodha_mapping import (
    FINAL_STATUSES,
    VARIETY,
    entry_has_tag,
    gtt_exit_target,
    kite_tag,
    modify_params,
    newest,
    order_params,
    to_broker_order,
)
from execution_service.errors import (
    ExecutionError,
    OrderNotFound,
    OrderRejected,
    PlacementUncertain,
    TransientBrokerError,
)

logger = logging.getLogger(__name__)

DEFAULT_ROOT = "https://api.kite.trade"
DEFAULT_REQUEST_TIMEOUT = 5.0
SESSION_EXPIRED = "Kite session expired: run `execution-service kite login`"
_REMEMBERED_TAGS = 20_000  # tag -> signal id pairs kept to label orders read back

# What a call was doing decides what a failure means (see `translate_error`).
PLACE, CANCEL, MODIFY, LOOKUP, READ = "place", "cancel", "modify", "lookup", "read"

_REFUSALS = (kite_errors.InputException, kite_errors.OrderException,
             kite_errors.PermissionException)
_SERVER_SIDE = (kite_errors.NetworkException, kite_errors.DataException)
#: Raised by requests before a connection exists (a bad KITE_API_URL, a connect timeout).
_NOT_SENT = (requests.ConnectTimeout, requests.exceptions.MissingSchema,
             requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL)


class OrderRateLimiter:
    """At most `per_second` requests per second as Kite counts them, waiting in arrival order,
    never dropped.

    A sliding window over the requests' ends: a request starts only once the n-th most recent
    one ended a window ago. Kite counts a request when it arrives, which is after it started
    here and before it ended, so no window at Kite holds more than n however late a worker
    thread sends it (a loaded machine, a slow network). 5% headroom on top.
    """

    HEADROOM = 1.05

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        if not per_second > 0:
            raise ValueError("per_second must be > 0")
        self._burst = max(1, int(per_second))
        self._window = self._burst / per_second * self.HEADROOM
        self._ends: deque[asyncio.Future[float]] = deque(maxlen=self._burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for one request: enter before it is sent, leave once it has ended
        (answered or failed)."""
        async with self._lock:
            if len(self._ends) == self._burst:
                # shielded: a cancelled waiter must not cancel another request's end
                ended = await asyncio.shield(self._ends[0])
                delay = ended + self._window - self._clock()
                if delay > 0:
                    await self._sleep(delay)
            end: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            self._ends.append(end)
        try:
            yield
        finally:
            end.set_result(self._clock())


class ZerodhaBroker(Broker):
    name = "ZERODHA"

    def __init__(self, api_key: str, access_token: str, *, root: str = DEFAULT_ROOT,
                 orders_per_second: float = 10.0,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT):
        self._kite = KiteConnect(api_key, access_token=access_token, root=root,
                                 timeout=request_timeout)
        self._root = root
        self._limiter = OrderRateLimiter(orders_per_second)
        self._connected: bool | None = None  # None: not known yet
        self._signals: dict[str, str] = {}  # tag -> signal id, for tags made in this process
        self._local = threading.local()  # each worker thread's own client (and session)
        self._sessions: list[requests.Session] = []
        self._gtts = GttExits(self._call, self.get_order, self.cancel_order)

    def __repr__(self) -> str:
        return f"ZerodhaBroker(root={self._root!r})"

    @property
    def is_connected(self) -> bool:
        return bool(self._connected)

    async def connect(self) -> None:
        """Check the session with one cheap call (`GET /user/profile`)."""
        await self._call(READ, "session check", "profile")
        logger.info("Connected to Kite at %s", self._root)

    def set_access_token(self, access_token: str) -> None:
        """Use a renewed session from the next request on (requests read it per call)."""
        self._kite.set_access_token(access_token)

    async def close(self) -> None:
        sessions, self._sessions = self._sessions, []
        self._local = threading.local()
        for session in [self._kite.reqsession, *sessions]:
            await asyncio.to_thread(session.close)
        self._connected = None

    def order_tag(self, signal_id: str) -> str:
        tag = kite_tag(signal_id)
        self._signals[tag] = signal_id
        if len(self._signals) > _REMEMBERED_TAGS:
            del self._signals[next(iter(self._signals))]  # the oldest
        return tag

    async def place_order(self, request: OrderRequest) -> BrokerOrder:
        tag = self.order_tag(request.signal_id)
        try:
            target = gtt_exit_target(request)
            if target is not None:
                return await self._gtts.place(request, *target)
            params = order_params(request, tag)
        except OrderRejected as e:
            logger.info("Not sent to Kite: %s: %s", request.signal_id, e.reason)
            raise
        async with self._limiter.slot():
            logger.info("Placing Kite order: %s: %s %s %s:%s %s %s %s tag=%s",
                        request.signal_id, params["transaction_type"], params["quantity"],
                        params["exchange"], params["tradingsymbol"], params["order_type"],
                        params["product"], params["validity"], tag)
            order_id = str(await self._call(PLACE, request.signal_id, "place_order",
                                            **params))
        logger.info("Kite received order %s: %s", order_id, request.signal_id)
        # A 200 only means Kite received it: its fate shows in the order history.
        return BrokerOrder(order_id=order_id, status=BrokerStatus.PENDING,
                           quantity=float(params["quantity"]), signal_id=request.signal_id,
                           extra={"tag": tag, "exchange": params["exchange"],
                                  "tradingsymbol": params["tradingsymbol"],
                                  "product": params["product"]})

    async def get_order(self, order_id: str) -> BrokerOrder:
        if (leg := parse_leg_order_id(order_id)) is not None:
            return await self._gtts.get(*leg)
        history = await self._call(LOOKUP, f"order {order_id}", "order_history",
                                   order_id)
        if not history:
            raise OrderNotFound(f"Kite has no order {order_id}")
        return await self._snapshot(history[-1])  # the last entry is the current state

    async def find_order(self, signal_id: str) -> BrokerOrder | None:
        """The newest order in today's order book carrying this signal's tag."""
        if (leg_id := self._gtts.known_leg(signal_id)) is not None:
            return await self.get_order(leg_id)
        tag = self.order_tag(signal_id)
        orders = await self._call(READ, signal_id, "orders")
        entry = newest([order for order in orders if entry_has_tag(order, tag)])
        if entry is None:
            return None
        return await self._snapshot(entry, signal_id)

    async def cancel_order(self, order_id: str) -> None:
        """Ask Kite to cancel. Like the other adapters, cancelling an order that is already
        complete, cancelled or rejected is a no-op; a refusal while the order is still live
        ("being processed, try later") is TransientBrokerError."""
        if (leg := parse_leg_order_id(order_id)) is not None:
            await self._gtts.cancel(*leg)
            return
        try:
            async with self._limiter.slot():
                logger.info("Cancelling Kite order %s", order_id)
                await self._call(CANCEL, f"order {order_id}", "cancel_order", VARIETY,
                                 order_id)
        except OrderRejected as refused:
            current = await self.get_order(order_id)
            if current.extra.get("kite_status") in FINAL_STATUSES:
                logger.info("Kite order %s is already %s: nothing to cancel", order_id,
                            current.extra["kite_status"])
                return
            raise TransientBrokerError(f"Kite refused to cancel order {order_id} for now: "
                                       f"{refused.reason}") from refused

    async def modify_order(self, order_id: str, request: OrderRequest) -> None:
        """Kite's `modify_order` with the new quantity and prices (a refusal is OrderRejected:
        a completed, cancelled or rejected order cannot be modified)."""
        if (leg := parse_leg_order_id(order_id)) is not None:
            await self._gtts.modify(*leg, request)
            return
        fields = modify_params(request)
        async with self._limiter.slot():
            logger.info("Modifying Kite order %s: %s", order_id, fields)
            await self._call(MODIFY, f"order {order_id}", "modify_order", VARIETY,
                             order_id, **fields)

    async def list_orders(self) -> list[BrokerOrder]:
        orders = await self._call(READ, "order book", "orders")
        trades_by_order: dict[str, list[dict]] = defaultdict(list)
        if any(float(order.get("filled_quantity") or 0) > 0 for order in orders):
            for trade in await self._call(READ, "trade book", "trades"):
                trades_by_order[str(trade.get("order_id"))].append(trade)
        return [to_broker_order(order, trades_by_order[str(order["order_id"])],
                                self._signals.get(order.get("tag")))
                for order in orders]

    async def _snapshot(self, entry: dict, signal_id: str | None = None) -> BrokerOrder:
        trades: list[dict] = []
        if float(entry.get("filled_quantity") or 0) > 0:
            order_id = str(entry["order_id"])
            trades = await self._call(LOOKUP, f"order {order_id}", "order_trades",
                                      order_id)
        return to_broker_order(entry, trades, signal_id or self._signals.get(entry.get("tag")))

    async def _call(self, operation: str, about: str, method: str, *args, **kwargs):
        """Run one client call (a KiteConnect method, by name) in a worker thread; translate
        whatever it raises. `about` (a signal id, an order id) goes into the log line of a
        failure."""
        try:
            result = await asyncio.to_thread(self._invoke, method, *args, **kwargs)
        except Exception as e:
            error = translate_error(e, operation)
            self._note_failure(e, error, f"{operation} ({about})")
            raise error from e
        self._set_connected(True, "Kite reachable")
        return result

    def _invoke(self, method: str, *args, **kwargs):
        """On a worker thread: a requests.Session is not safe across threads, so each thread
        calls through a client of its own, made like the adapter's first one."""
        client = getattr(self._local, "kite", None)
        template = self._kite
        if client is None:
            client = KiteConnect(template.api_key, access_token=template.access_token,
                                 root=template.root, timeout=template.timeout)
            self._local.kite = client
            self._sessions.append(client.reqsession)
        elif client.access_token != template.access_token:
            client.set_access_token(template.access_token)
        return getattr(client, method)(*args, **kwargs)

    def _note_failure(self, cause: Exception, error: ExecutionError, what: str) -> None:
        if isinstance(cause, kite_errors.TokenException):
            # Kite answered: reachable, so no connection alert and no reconnect loop; the
            # session halt is the one alert, and placing is refused with the session reason
            self._set_connected(True, "Kite reachable")
            self._session_expired()
        elif isinstance(cause, requests.ConnectionError) and not isinstance(
                error, PlacementUncertain):
            self._set_connected(False, f"Kite unreachable ({type(cause).__name__})")
        if isinstance(error, OrderRejected | OrderNotFound):
            logger.info("Kite %s refused: %s", what, error)
        elif isinstance(cause, kite_errors.KiteException | requests.RequestException):
            logger.warning("Kite %s failed: %s", what, error)
        else:
            logger.warning("Kite %s failed unexpectedly: %s", what, error, exc_info=cause)

    def _set_connected(self, connected: bool, detail: str) -> None:
        """Tell the listener about a loss, and about a recovery after a loss."""
        previous, self._connected = self._connected, connected
        if connected and previous is False:
            self._connection_changed(True, detail)
        elif not connected and previous is not False:
            self._connection_changed(False, detail)


def translate_error(error: Exception, operation: str) -> ExecutionError:
    """What a failed client call means for the caller.

    Kite refusals (InputException, OrderException, PermissionException, and the error types
    the client turns into GeneralException below 500: margin, holding, user) are OrderRejected
    when placing, modifying or cancelling (`cancel_order` settles a refused cancel itself).
    TokenException: the session is gone. 429: try later. The API's trouble reaching its OMS
    (NetworkException, DataException, 5xx) and network errors are transient, except while
    placing: the order may have reached the OMS all the same (Kite's advice is to check the
    order book), so that is PlacementUncertain, unless no connection was ever made.
    """
    if isinstance(error, kite_errors.KiteException):
        return _translate_kite(error, operation)
    if isinstance(error, requests.RequestException):
        return _translate_network(error, operation)
    detail = f"unexpected {type(error).__name__} from kiteconnect: {error}"
    if operation == PLACE:
        return PlacementUncertain(f"{detail}: look the order up by its tag")
    return TransientBrokerError(detail)


def _translate_kite(error: kite_errors.KiteException, operation: str) -> ExecutionError:
    message = str(error) or type(error).__name__
    code = getattr(error, "code", 500)
    if isinstance(error, kite_errors.TokenException):
        if operation == PLACE:
            return OrderRejected(f"not sent: {SESSION_EXPIRED} ({message})")
        return TransientBrokerError(f"{SESSION_EXPIRED} ({message})")
    if code == 429:
        return TransientBrokerError(f"Kite rate limit ({message})")
    if operation in (LOOKUP, CANCEL, MODIFY) and _is_not_found(error):
        return OrderNotFound(message)
    server_side = not isinstance(error, _REFUSALS) and (
        isinstance(error, _SERVER_SIDE) or code >= 500)
    kind = f"{type(error).__name__} {code}: {message}"
    if server_side and operation == PLACE:
        return PlacementUncertain(f"Kite could not confirm the order ({kind}): "
                                  "look it up by its tag")
    if server_side:
        return TransientBrokerError(f"Kite unavailable ({kind})")
    if operation in (PLACE, CANCEL, MODIFY):
        return OrderRejected(message)
    if operation == LOOKUP and isinstance(error, kite_errors.InputException):
        return OrderNotFound(message)
    return TransientBrokerError(f"Kite refused the request ({kind})")


def _is_not_found(error: kite_errors.KiteException) -> bool:
    message = str(error).lower()
    return getattr(error, "code", None) == 404 or "couldn't find" in message \
        or "not found" in message


def _translate_network(error: requests.RequestException, operation: str) -> ExecutionError:
    kind = f"{type(error).__name__}: {error}"
    if operation == PLACE and not _never_connected(error):
        return PlacementUncertain(f"no answer from Kite while placing ({kind}): "
                                  "look the order up by its tag")
    return TransientBrokerError(f"Kite unreachable ({kind})")


def _never_connected(error: requests.RequestException) -> bool:
    """True when no byte of the request can have reached Kite (no connection was made)."""
    if isinstance(error, _NOT_SENT):
        return True
    if not isinstance(error, requests.ConnectionError):
        return False
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, NewConnectionError)
