"""Errors grouped by what the caller must do about them."""


class ExecutionError(Exception):
    """Base of every error this service raises on purpose."""


class TransientBrokerError(ExecutionError):
    """The broker could not be reached or answered 'try later'. Nothing was sent: retry."""


class PlacementUncertain(ExecutionError):
    """The order may or may not have reached the broker (timeout or disconnect while placing).

    Never re-send blindly: look the order up by its signal tag first.
    """


class OrderRejected(ExecutionError):
    """The broker (or a pre-trade check) refused the order. Record it, never retry."""

    def __init__(self, reason: str, *, alert: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.alert = alert  # an operator alert to raise besides the rejection, if any


class OrderNotFound(ExecutionError):
    """The broker does not know this order id."""


class FatalConfigError(ExecutionError):
    """The configuration cannot work: stop at start with one clear line."""


class StoreUnavailable(ExecutionError):
    """The audit store could not be reached; the message must be retried later."""


class DuplicateSignal(Exception):  # noqa: N818 (a fact about the signal, not a failure)
    """A record for this signal_id already exists: the store's answer to a second claim."""


class UnknownAccount(ExecutionError):
    """A command named an account that is not registered."""
