"""Secret encryption: round trip, binding to connector and field, rotation, bad keys."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from engine.crypto import Keyring, SecretError, is_encrypted, load_keyring, parse_key
from engine.errors import ConfigurationError

KEY_A = b"A" * 32
KEY_B = bytes(range(32))


def test_round_trip_and_no_plaintext_in_ciphertext() -> None:
    ring = Keyring(KEY_A)
    stored = ring.encrypt("canary-secret-123", "conn_1", "api_secret")
    assert is_encrypted(stored)
    assert "canary" not in stored
    assert ring.decrypt(stored, "conn_1", "api_secret") == "canary-secret-123"
    assert ring.encrypt("x", "c", "f") != ring.encrypt("x", "c", "f")  # random nonce


def test_ciphertext_is_bound_to_its_connector_and_field() -> None:
    ring = Keyring(KEY_A)
    stored = ring.encrypt("s", "conn_1", "api_secret")
    with pytest.raises(SecretError):
        ring.decrypt(stored, "conn_2", "api_secret")  # swapped between connectors
    with pytest.raises(SecretError):
        ring.decrypt(stored, "conn_1", "password")  # swapped between fields
    tampered = stored[:-4] + ("AAAA" if not stored.endswith("AAAA") else "BBBB")
    with pytest.raises(SecretError):
        ring.decrypt(tampered, "conn_1", "api_secret")


def test_rotation_decrypts_with_older_keys() -> None:
    old = Keyring(KEY_A)
    stored = old.encrypt("s", "c", "f")
    new = Keyring(KEY_B, older=(KEY_A,))
    assert new.decrypt(stored, "c", "f") == "s"
    assert new.needs_rotation(stored)
    assert not new.needs_rotation(new.encrypt("s", "c", "f"))
    with pytest.raises(SecretError, match="unknown key"):
        Keyring(KEY_B).decrypt(stored, "c", "f")  # old key dropped: clear error


def test_key_formats() -> None:
    assert parse_key("0123456789abcdef0123456789abcdef") == b"0123456789abcdef0123456789abcdef"
    assert parse_key(base64.b64encode(KEY_B).decode()) == KEY_B
    assert parse_key(base64.urlsafe_b64encode(KEY_B).decode().rstrip("=")) == KEY_B
    for bad in ("short", "x" * 31, base64.b64encode(b"y" * 16).decode()):
        with pytest.raises(ConfigurationError, match="ENCRYPTION_KEY"):
            parse_key(bad)


def test_external_database_requires_a_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="ENCRYPTION_KEY is required"):
        load_keyring(None, None, embedded=False, data_dir=tmp_path)


def test_embedded_default_creates_a_private_key_once(tmp_path: Path) -> None:
    first = load_keyring(None, None, embedded=True, data_dir=tmp_path)
    path = tmp_path / "encryption.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = load_keyring(None, None, embedded=True, data_dir=tmp_path)
    assert again.current == first.current
