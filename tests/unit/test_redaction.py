"""Redaction in one place: each secret-bearing setting is redacted in configuration errors,
logs, tracebacks and `status`, by the one redactor."""

from __future__ import annotations

import io
import logging
import uuid

import pytest
from click.testing import CliRunner

from execution_service.cli import main
from execution_service.config import SECRET_SETTINGS, load_settings
from execution_service.errors import FatalConfigError
from execution_service.redaction import REDACTOR, redact_uri_passwords, uri_password

PASSWORD = f"pw{uuid.uuid4().hex}"


def secret_setting(name: str) -> tuple[dict, str]:
    """(environment giving `name` a fresh secret, the secret)."""
    if name == "MONGODB_URI":
        return {"MONGODB_URI": f"mongodb://trader:{PASSWORD}@127.0.0.1:1/"}, PASSWORD
    secret = f"{name.lower()}-{uuid.uuid4().hex}"
    if name == "CREDENTIALS_KEY":
        from cryptography.fernet import Fernet

        secret = Fernet.generate_key().decode()
    return {name: secret}, secret


ALL = [*SECRET_SETTINGS, "MONGODB_URI"]


@pytest.mark.parametrize("name", ALL)
def test_given_secret_setting_when_another_setting_is_wrong_then_error_has_no_secret(name):
    env, secret = secret_setting(name)
    with pytest.raises(FatalConfigError) as raised:
        load_settings(environ={**env, "ORDER_TIMEOUT_SECONDS": f"x{secret}"})
    assert "ORDER_TIMEOUT_SECONDS" in str(raised.value)
    assert secret not in str(raised.value)


@pytest.mark.parametrize("name", ALL)
def test_given_secret_setting_when_logged_with_traceback_then_neither_shows_it(name):
    env, secret = secret_setting(name)
    load_settings(environ={**env, "MONGODB_URI": env.get("MONGODB_URI", "mongomock://")})
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger = logging.getLogger(f"test.redaction.{name}")
    logger.addHandler(handler)
    try:
        logger.warning("connecting with %s", secret)
        try:
            raise RuntimeError(f"refused: {secret}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert "connecting with [REDACTED]" in text and "RuntimeError: refused: [REDACTED]" in text
    assert secret not in text
    assert secret not in REDACTOR.format_exception(ValueError(secret))


@pytest.mark.parametrize("name", [*SECRET_SETTINGS])
def test_given_secret_setting_when_status_runs_then_it_says_set_never_the_value(name):
    env, secret = secret_setting(name)
    result = CliRunner().invoke(main, ["status", "--json"],
                                env={**env, "MONGODB_URI": "mongomock://"})
    assert f'"{name}": "set"' in result.output
    assert secret not in result.output


def test_given_mistyped_mongodb_uri_when_any_command_runs_then_password_not_echoed():
    env = {"MONGODB_URI": f"mongdb://trader:{PASSWORD}@db.example:27017/trading"}
    commands = [["run"], ["status"], ["status", "--json"], ["orders"], ["positions"],
                ["accounts", "list"],
                ["show", "sig_1"], ["reconcile"], ["halt", "--reason", "x"], ["resume"],
                ["dead-letters"], ["setup-pubsub"]]
    for command in commands:
        result = CliRunner().invoke(main, command, env=env)
        assert result.exit_code == 2, (command, result.output)
        assert "MONGODB_URI" in result.output and PASSWORD not in result.output, command
        assert "mongdb://trader:[REDACTED]@db.example" in result.output


def test_given_uri_passwords_in_any_scheme_then_redacted_and_found():
    assert redact_uri_passwords("x mongdb://u:p%40ss@h/db y") == "x mongdb://u:[REDACTED]@h/db y"
    assert redact_uri_passwords("https://host:8080/path") == "https://host:8080/path"
    assert uri_password("mongodb://u:p%40ss@h") == "p@ss"
    assert uri_password("mongodb://h:27017") is None


def test_given_an_unexpected_error_in_a_command_then_its_traceback_is_redacted(monkeypatch):
    env, secret = secret_setting("KITE_API_SECRET")

    def broken(*args, **kwargs):
        raise RuntimeError(f"bug while holding {secret}")

    monkeypatch.setattr("execution_service.status.read_status", broken)
    result = CliRunner().invoke(main, ["status"], env={**env, "MONGODB_URI": "mongomock://"})
    assert result.exit_code == 1
    assert "Traceback" in result.output and "bug while holding [REDACTED]" in result.output
    assert secret not in result.output


def test_given_secrets_file_then_settings_read_from_it_and_environment_wins(tmp_path):
    secrets = tmp_path / "secrets.env"
    secrets.write_text("# kite\nKITE_API_KEY=from_file_key\nexport KITE_ACCESS_TOKEN='file_tok'\n")
    secrets.chmod(0o600)
    settings = load_settings(environ={"SECRETS_FILE": str(secrets),
                                      "KITE_ACCESS_TOKEN": "env_token"})
    assert settings.KITE_API_KEY == "from_file_key"
    assert settings.KITE_ACCESS_TOKEN == "env_token"
    assert "from_file_key" not in repr(settings)


def test_given_secrets_file_readable_by_others_or_malformed_then_one_line_naming_it(tmp_path):
    secrets = tmp_path / "secrets.env"
    secrets.write_text("KITE_API_KEY=k3y_in_file\n")
    secrets.chmod(0o644)
    with pytest.raises(FatalConfigError, match="readable by others: chmod 600"):
        load_settings(environ={"SECRETS_FILE": str(secrets)})
    secrets.chmod(0o600)
    secrets.write_text("KITE_API_KEY k3y_in_file\n")
    with pytest.raises(FatalConfigError, match="line 1: expected SETTING=value") as raised:
        load_settings(environ={"SECRETS_FILE": str(secrets)})
    assert "k3y_in_file" not in str(raised.value)
    with pytest.raises(FatalConfigError, match="SECRETS_FILE .*missing"):
        load_settings(environ={"SECRETS_FILE": str(tmp_path / "missing")})
