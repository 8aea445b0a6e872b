"""IB's native bracket as orders (brokers/ibkr_contracts.link_bracket), pure: ids in sending
order, children naming the parent, transmit only on the last, with ib_async's own Order
classes and its own IB.bracketOrder as the reference."""

from __future__ import annotations

import itertools

import pytest
from ib_async import IB, LimitOrder, MarketOrder, StopOrder

from brokers.base import OrderRequest
from brokers.ibkr_contracts import build_order, link_bracket
from execution_service.errors import OrderRejected


def ids(start: int = 40):
    return itertools.count(start).__next__


def test_given_parent_and_two_children_then_linked_as_ib_async_bracket_order_links_them():
    """Given a parent, a take-profit and a stop-loss, when linked, then ids, parentId and
    transmit flags are exactly what ib_async's IB.bracketOrder gives its three orders."""
    parent, take, stop = MarketOrder("BUY", 10), LimitOrder("SELL", 10, 110.0), \
        StopOrder("SELL", 10, 95.0)
    linked = link_bracket(parent, [take, stop], ids())
    ib = IB()
    ib.client._reqIdSeq, ib.client.isReady = 40, lambda: True
    reference = ib.bracketOrder("BUY", 10, 100.0, 110.0, 95.0)
    assert [(o.orderId, o.parentId, o.transmit) for o in linked] == \
        [(o.orderId, o.parentId, o.transmit) for o in reference]
    assert [type(o).__name__ for o in linked[1:]] == [type(o).__name__ for o in reference[1:]]


@pytest.mark.parametrize("children", [1, 0])
def test_given_fewer_children_then_the_last_order_sent_transmits(children):
    orders = [StopOrder("SELL", 10, 95.0)][:children]
    linked = link_bracket(MarketOrder("BUY", 10), orders, ids(7))
    assert [o.transmit for o in linked] == [False] * children + [True]
    assert all(o.parentId == 7 for o in linked[1:])


def test_given_a_crypto_stop_loss_then_refused_before_anything_is_built():
    stop = OrderRequest(signal_id="sig_c:SL", account_id="acc", symbol="BTC", side="SELL",
                        quantity=1, order_type="STOP", stop_price=50_000.0,
                        time_in_force="GTC", asset_class="CRYPTO")
    with pytest.raises(OrderRejected, match="STOP orders for crypto"):
        build_order(stop, "sig_c:SL")
