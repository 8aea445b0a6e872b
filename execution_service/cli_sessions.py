"""`execution-service kite login` (SPEC §14) and `execution-service confirmations`.

Registered on the main group by `register(main)` at the end of cli.py.
"""

from __future__ import annotations

import getpass
import json
import signal
import sys
import uuid

import click

from execution_service.clock import utc_now
from execution_service.domain.views import confirmation_line
from execution_service.errors import FatalConfigError


@click.group("kite")
def kite() -> None:
    """Zerodha Kite Connect: the daily session."""


@kite.command("login")
@click.option("--request-token", help="The request_token from Kite's redirect URL.")
@click.option("--listen", "listen_port", type=click.IntRange(1, 65535),
              help="Serve Kite's redirect on 127.0.0.1:PORT and take the token from it.")
@click.option("--timeout", default=300.0, show_default=True,
              help="With --listen: seconds to wait for the redirect.")
def kite_login(request_token: str | None, listen_port: int | None, timeout: float) -> None:
    """Print the login URL, exchange the request_token for the day's access token, keep it
    in the store encrypted with CREDENTIALS_KEY: running daemons use it within seconds and lift
    an expired-session halt."""
    from brokers import kite_login as login
    from execution_service.cli_support import cli_settings, with_store
    from execution_service.credentials import SecretBox
    from execution_service.redaction import protect
    from execution_service.service.broker_sessions import save_kite_session

    settings = cli_settings()
    missing = [name for name in ("KITE_API_KEY", "KITE_API_SECRET", "CREDENTIALS_KEY")
               if not getattr(settings, name)]
    if missing:  # before a single-use request token is spent
        raise FatalConfigError(f"kite login needs {' and '.join(missing)}"
                               + (" (the access token is kept in the store only encrypted)"
                                  if "CREDENTIALS_KEY" in missing else ""))
    box = SecretBox(settings.CREDENTIALS_KEY)
    if request_token and listen_port:
        raise click.UsageError("give --request-token or --listen, not both")
    click.echo(f"Kite login URL: {login.login_url(settings.KITE_API_KEY)}")
    if listen_port:
        def listening(port: int) -> None:
            click.echo(f"Waiting for Kite's redirect on http://127.0.0.1:{port}/ (the app's "
                       "redirect URL must point there)")

        request_token = login.wait_for_redirect(listen_port, timeout, listening)
    elif not request_token:
        request_token = click.prompt("request_token (from the redirect URL after you log in)")
    protect([request_token.strip()])
    session = login.exchange_request_token(settings.KITE_API_KEY, settings.KITE_API_SECRET,
                                           request_token.strip(), settings.KITE_API_URL)
    by = f"cli:{getpass.getuser()}"
    halt = with_store(lambda store: save_kite_session(store, session, utc_now(), by, box))
    click.echo(f"Kite session saved for user {session.get('user_id') or '?'}: running daemons "
               "use it within seconds")
    if halt is not None:
        click.echo("Zerodha accounts are halted (Kite session expired): a daemon lifts the halt "
                   "as soon as Kite accepts the new session")


@click.command("confirmations")
@click.option("--json", "as_json", is_flag=True, help="Print the confirmations as JSON.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=0),
              help="How many, newest first (0: all).")
@click.option("--follow", is_flag=True,
              help="Print what arrives on execution-confirmations until Ctrl-C, through a "
                   "temporary subscription removed on exit.")
def confirmations(as_json: bool, limit: int, follow: bool) -> None:
    """The latest confirmations from the store, or (--follow) as they are published."""
    if follow:
        _follow(as_json)
        return
    from execution_service.cli_support import print_rows, with_store

    records = with_store(lambda store: store.recent_records(limit))
    print_rows(latest_confirmations(records, limit), as_json, confirmation_line,
               "no confirmations yet")


def latest_confirmations(records: list[dict], limit: int) -> list[dict]:
    """The confirmations kept in these records (the outbox), newest first."""
    rows = [payload for doc in records for payload in doc.get("confirmations") or []]
    rows.sort(key=lambda row: (row.get("at") or "", row.get("sequence") or 0), reverse=True)
    return rows[:limit] if limit else rows


def _follow(as_json: bool) -> None:
    from execution_service.cli_support import cli_settings, pubsub_for

    settings = cli_settings()
    pubsub, names = pubsub_for(settings)
    subscriber = pubsub.pubsub_v1.SubscriberClient()
    topic = names.confirmations_topic
    path = subscriber.subscription_path(names.project, f"confirmations-follow-"
                                        f"{uuid.uuid4().hex[:12]}")
    try:
        subscriber.create_subscription(request={"name": path, "topic": topic,
                                                "ack_deadline_seconds": 30})
    except Exception as e:  # the topic is missing, or Pub/Sub is down: say which
        raise FatalConfigError(f"cannot subscribe to {topic}: {e} (run `execution-service "
                               "setup-pubsub`)") from None
    click.echo(f"following {topic} (Ctrl-C stops; the subscription is removed)", err=True)

    def show(message) -> None:
        try:
            row = json.loads(message.data)
        except ValueError:
            row = {"signal_id": "?", "body": message.data.decode("utf-8", "replace")}
        click.echo(json.dumps(row, separators=(",", ":")) if as_json
                   else confirmation_line(row))
        sys.stdout.flush()
        message.ack()

    future = subscriber.subscribe(path, show)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        future.result()
    except KeyboardInterrupt:
        pass
    finally:
        future.cancel()
        subscriber.delete_subscription(request={"subscription": path})
        subscriber.close()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM ends --follow like Ctrl-C: the subscription is removed


def register(main_group: click.Group) -> None:
    main_group.add_command(kite)
    main_group.add_command(confirmations)

