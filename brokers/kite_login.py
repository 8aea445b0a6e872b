"""Kite Connect's login flow for `execution-service kite login` (SPEC §14).

The operator opens the login URL, logs in at Zerodha, and Kite redirects the browser to the
app's redirect URL with `request_token=…`; `exchange_request_token` trades it (with the api
secret) for the day's access token through kiteconnect's `generate_session`. With `--listen`
the redirect is served here, on 127.0.0.1. Tokens and the secret are never logged.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import requests
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kite_errors

from execution_service.errors import FatalConfigError


def login_url(api_key: str) -> str:
    return KiteConnect(api_key).login_url()


def exchange_request_token(api_key: str, api_secret: str, request_token: str, root: str,
                           timeout: float = 10.0) -> dict:
    """`generate_session`: the session dict (access_token, user_id, …); one clear line on
    failure."""
    kite = KiteConnect(api_key, root=root, timeout=timeout)
    try:
        return kite.generate_session(request_token, api_secret=api_secret)
    except kite_errors.KiteException as e:
        raise FatalConfigError(f"Kite refused the request token ({type(e).__name__}: {e}); "
                               "log in again for a fresh one (they are single-use and "
                               "expire within minutes)") from None
    except requests.RequestException as e:
        raise FatalConfigError(f"Kite unreachable at {root} ({type(e).__name__})") from None
    finally:
        kite.reqsession.close()


def wait_for_redirect(port: int, timeout: float, on_listening=None) -> str:
    """Serve Kite's redirect on 127.0.0.1:`port` until it brings a request_token."""
    found: dict[str, str] = {}
    arrived = threading.Event()

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server names it
            query = parse_qs(urlparse(self.path).query)
            token = (query.get("request_token") or [""])[0]
            status = (query.get("status") or ["success"])[0]
            if token and status == "success":
                found["token"] = token
                body, code = b"Logged in: the execution service has the session. " \
                             b"You can close this tab.\n", 200
                arrived.set()
            else:
                body, code = b"No request_token in this URL: log in through the Kite " \
                             b"login URL.\n", 400
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # the URL carries the request token
            return

    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), Redirect)
    except OSError as e:
        raise FatalConfigError(f"--listen {port}: cannot listen on 127.0.0.1:{port} "
                               f"({e.strerror})") from None
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    try:
        if on_listening is not None:
            on_listening(server.server_address[1])
        if not arrived.wait(timeout):
            raise FatalConfigError(f"no Kite redirect reached 127.0.0.1:{port} within "
                                   f"{timeout:g}s")
        return found["token"]
    finally:
        server.shutdown()
        server.server_close()
