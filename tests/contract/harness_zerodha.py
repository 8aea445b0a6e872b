"""BrokerHarness for ZerodhaBroker: the real kiteconnect client against the fake Kite server.

Kite accepts an order with a 200 and reports its fate in the order history, so a refused
order (`reject_reason`) is placed, then shows REJECTED with that `status_message` on the
first look-up, as Kite's risk checks report it. Fills arrive as trades, one chunk per
`advance`; a cancel stays CANCEL PENDING until `advance` confirms it.
"""

from __future__ import annotations

from brokers.base import Broker
from brokers.zerodha import ZerodhaBroker
from brokers.zerodha_gtt import parse_leg_order_id
from tests.fakes.fake_kite import ACCESS_TOKEN, API_KEY, FakeKite


class ZerodhaHarness:
    name = "ZERODHA"

    def __init__(self) -> None:
        self.fake: FakeKite | None = None
        self.broker: ZerodhaBroker | None = None
        self._chunks = 1
        self._delivered: dict[str, int] = {}

    async def start(self, *, chunks: int = 1, reject_reason: str | None = None) -> Broker:
        self.fake = FakeKite().start()
        self.fake.reject_reason = reject_reason
        self.fake.hold_cancels = True
        self._chunks = chunks
        self.broker = ZerodhaBroker(API_KEY, ACCESS_TOKEN, root=self.fake.url,
                                    orders_per_second=1000, request_timeout=2.0)
        await self.broker.connect()
        return self.broker

    async def advance(self, order_id: str) -> None:
        fake = self._require_fake()
        if (leg := parse_leg_order_id(order_id)) is not None:  # a GTT exit: its placed order
            for placed in fake.triggered_orders(leg[0]):
                await self.advance(placed)
            return
        if fake.cancel_requested(order_id):
            fake.confirm_cancel(order_id)
            return
        order = fake.order(order_id)
        if order["status"] in ("COMPLETE", "REJECTED", "CANCELLED"):
            return
        chunk = self._next_chunk(order_id, int(order["quantity"]))
        if chunk > 0:
            fake.fill(order_id, chunk)

    async def move_market(self, symbol: str, price: float) -> None:
        """Regular orders fill on `advance`, at their own price; GTTs trigger on the move."""
        self._require_fake().move_market(price)

    async def stop(self) -> None:
        if self.broker is not None:
            await self.broker.close()
        if self.fake is not None:
            self.fake.stop()

    def _next_chunk(self, order_id: str, quantity: int) -> int:
        """Equal whole chunks (never more chunks than units); the last ones take the rest."""
        chunks = max(1, min(self._chunks, quantity))
        delivered = self._delivered.get(order_id, 0)
        if delivered >= chunks:
            return 0
        self._delivered[order_id] = delivered + 1
        base, extra = divmod(quantity, chunks)
        return base + (1 if delivered >= chunks - extra else 0)

    def _require_fake(self) -> FakeKite:
        assert self.fake is not None, "start() the harness first"
        return self.fake


HARNESS = ZerodhaHarness
