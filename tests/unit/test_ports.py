"""The ports the service layer is written against are the ones the adapters offer: every
method of each port exists on its adapter with the same parameters (a renamed or dropped
store method fails here, not at the first order)."""

from __future__ import annotations

import inspect

import pytest

from brokers.factory import BrokerFactory
from execution_service.adapters.command_log import CommandLog
from execution_service.adapters.publisher import TopicPublisher
from execution_service.adapters.store import Store
from execution_service.adapters.telegram import TelegramNotifier
from execution_service.service import ports

IMPLEMENTED_BY = [
    (ports.RecordStore, Store), (ports.LeaseStore, Store), (ports.OutboxStore, Store),
    (ports.PositionStore, Store), (ports.RiskStore, Store), (ports.HaltStore, Store),
    (ports.BracketStore, Store),
    (ports.CommandRequests, CommandLog), (ports.BrokerSource, BrokerFactory),
    (ports.Notifier, TelegramNotifier), (ports.Notifier, ports.NullNotifier),
    (ports.ConfirmationPublisher, TopicPublisher),
]


def _methods(port) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in inspect.getmembers(port)
            if inspect.isfunction(member) and not name.startswith("_")}


@pytest.mark.parametrize("port,adapter", IMPLEMENTED_BY,
                         ids=[f"{a.__name__}-{p.__name__}" for p, a in IMPLEMENTED_BY])
def test_given_a_port_then_its_adapter_has_every_method_with_the_same_parameters(port, adapter):
    wanted = _methods(port)
    assert wanted, f"{port.__name__} declares no method"
    for name, signature in wanted.items():
        assert hasattr(adapter, name), f"{adapter.__name__} has no {name}"
        offered = inspect.signature(getattr(adapter, name))
        assert list(offered.parameters)[:len(signature.parameters)] == \
            list(signature.parameters), (adapter.__name__, name, offered, signature)
