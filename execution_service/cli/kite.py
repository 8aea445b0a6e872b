"""`execution-service kite login` (SPEC §14): the day's Zerodha session."""

from __future__ import annotations

import click

from execution_service.cli.common import cli_settings, operator, with_store
from execution_service.clock import utc_now
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
    halt = with_store(lambda store: save_kite_session(store, session, utc_now(), operator(),
                                                      box))
    click.echo(f"Kite session saved for user {session.get('user_id') or '?'}: running daemons "
               "use it within seconds")
    if halt is not None:
        click.echo("Zerodha accounts are halted (Kite session expired): a daemon lifts the halt "
                   "as soon as Kite accepts the new session")
