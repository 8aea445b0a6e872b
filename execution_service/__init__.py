"""Order execution service: trading-orders in, broker orders, execution-confirmations out."""

__version__ = "0.1.0"
