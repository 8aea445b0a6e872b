"""Broker credentials in ACCOUNTS_FILE rows: accepted, never written to `accounts` as given."""

from __future__ import annotations

import json
import uuid

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet

from brokers.factory import BrokerFactory
from execution_service.account_setup import (
    account_credentials,
    seed_accounts,
    use_account_credentials,
)
from execution_service.adapters.store import Store, open_store
from execution_service.cli import main
from execution_service.config import load_settings
from execution_service.credentials import SecretBox, shown, split_credentials
from execution_service.errors import FatalConfigError


def kite_row(account_id: str = "acc_kite", **credentials) -> dict:
    values = {"api_key": f"key{uuid.uuid4().hex[:8]}", "api_secret": uuid.uuid4().hex,
              "access_token": uuid.uuid4().hex, **credentials}
    return {"account_id": account_id, "broker": "ZERODHA", **values}


def setup(tmp_path, rows: list[dict], **env) -> tuple:
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps(rows))
    settings = load_settings(environ={"MONGODB_URI": "mongomock://",
                                      "ACCOUNTS_FILE": str(accounts), **env})
    handle = open_store("mongomock://", "trading", None)
    return settings, Store(handle.database)


def stored_text(store: Store) -> str:
    return json.dumps([list(store.db[name].find()) for name in store.db.list_collection_names()],
                      default=str)


def test_given_row_with_credentials_then_split_and_shown_only_as_set():
    plain, credentials = split_credentials({"account_id": "a", "API_SECRET": "s3cr3t",
                                            "access_token": "t0ken", "broker": "ZERODHA",
                                            "password": None})
    assert plain == {"account_id": "a", "broker": "ZERODHA"}
    assert credentials == {"API_SECRET": "s3cr3t", "access_token": "t0ken"}
    legacy = {"_id": "a", "api_secret": "s3cr3t", "credentials_set": ["access_token"]}
    assert shown(legacy)["credentials"] == {"access_token": "set", "api_secret": "set"}
    assert "s3cr3t" not in json.dumps(shown(legacy))


def test_given_no_key_when_seeded_then_credentials_not_stored_but_usable(tmp_path):
    row = kite_row()
    settings, store = setup(tmp_path, [row])
    seed_accounts(settings, store)
    account = store.get_account("acc_kite")
    assert account["credentials_set"] == ["access_token", "api_key", "api_secret"]
    assert account["credentials_stored"] is False
    for name in ("api_key", "api_secret", "access_token"):
        assert row[name] not in stored_text(store)
    assert account_credentials(settings, store)["acc_kite"]["api_secret"] == row["api_secret"]


def test_given_key_when_seeded_then_sealed_and_a_restart_without_the_file_opens_them(tmp_path):
    row = kite_row()
    key = Fernet.generate_key().decode()
    settings, store = setup(tmp_path, [row], CREDENTIALS_KEY=key)
    seed_accounts(settings, store)
    for name in ("api_key", "api_secret", "access_token"):
        assert row[name] not in stored_text(store)
    assert key not in stored_text(store)
    without_file = settings.model_copy(update={"ACCOUNTS_FILE": None})
    opened = account_credentials(without_file, store)["acc_kite"]
    assert opened == {name: row[name] for name in ("api_key", "api_secret", "access_token")}
    wrong = without_file.model_copy(update={"CREDENTIALS_KEY": Fernet.generate_key().decode()})
    with pytest.raises(FatalConfigError, match="cannot be decrypted with CREDENTIALS_KEY"):
        account_credentials(wrong, store)


def test_given_credentials_left_in_clear_by_an_older_version_then_sealed_at_start(tmp_path):
    key = Fernet.generate_key().decode()
    settings, store = setup(tmp_path, [], CREDENTIALS_KEY=key)
    store.accounts.insert_one({"_id": "old", "broker": "ZERODHA", "api_secret": "old-s3cr3t",
                               "access_token": "old-t0ken"})
    seed_accounts(settings, store)
    assert "old-s3cr3t" not in stored_text(store) and "old-t0ken" not in stored_text(store)
    assert SecretBox(key).open(store.get_account("old")["credentials_encrypted"], "old") == {
        "api_secret": "old-s3cr3t", "access_token": "old-t0ken"}


def test_given_kite_credentials_only_in_the_account_then_the_zerodha_broker_uses_them(tmp_path):
    row = kite_row()
    settings, store = setup(tmp_path, [row], USE_MOCK_BROKER="false")
    seed_accounts(settings, store)
    brokers = BrokerFactory(settings, store.mock_ledger)
    use_account_credentials(settings, store, brokers)
    kite = brokers.create_broker("ZERODHA")._kite
    assert (kite.api_key, kite.access_token) == (row["api_key"], row["access_token"])


def test_given_environment_kite_credentials_then_they_win_over_the_account(tmp_path):
    settings, store = setup(tmp_path, [kite_row()], USE_MOCK_BROKER="false",
                            KITE_API_KEY="env_key", KITE_ACCESS_TOKEN="env_token")
    seed_accounts(settings, store)
    brokers = BrokerFactory(settings, store.mock_ledger)
    use_account_credentials(settings, store, brokers)
    kite = brokers.create_broker("ZERODHA")._kite
    assert (kite.api_key, kite.access_token) == ("env_key", "env_token")


def test_given_two_zerodha_accounts_with_different_sessions_then_one_line_refusal(tmp_path):
    settings, store = setup(tmp_path, [kite_row("k1"), kite_row("k2")], USE_MOCK_BROKER="false")
    seed_accounts(settings, store)
    with pytest.raises(FatalConfigError, match="one Kite session per daemon") as raised:
        use_account_credentials(settings, store, BrokerFactory(settings, store.mock_ledger))
    assert "k1" in str(raised.value) and "k2" in str(raised.value)


def test_given_malformed_key_then_one_line_naming_it_without_the_value():
    with pytest.raises(FatalConfigError, match="CREDENTIALS_KEY: must be a Fernet key") as raised:
        SecretBox("not-a-fernet-key-value")
    assert "not-a-fernet-key-value" not in str(raised.value)


def test_given_accounts_add_then_list_shows_no_credential_fields(tmp_path):
    runner = CliRunner()
    env = {"MONGODB_URI": f"embedded://{tmp_path / 'data'}"}
    added = runner.invoke(main, ["accounts", "add", "acc_x", "--broker", "MOCK"], env=env)
    assert added.exit_code == 0, added.output
    listed = runner.invoke(main, ["accounts", "list", "--json"], env=env)
    assert json.loads(listed.output)[0]["credentials"] == {}


def test_given_malformed_credentials_key_setting_then_one_config_line_without_it():
    with pytest.raises(FatalConfigError, match="CREDENTIALS_KEY: must be a Fernet key") as raised:
        load_settings(environ={"CREDENTIALS_KEY": "notafernetkey123"})
    assert "notafernetkey123" not in str(raised.value)
