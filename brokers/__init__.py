"""Broker adapters behind one interface (`brokers.base.Broker`), built by `BrokerFactory`."""
