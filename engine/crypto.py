"""Encryption of stored secrets: AES-256-GCM with a random 96-bit nonce, the key id stored
with the ciphertext, and associated data binding each value to its connector and field
(a ciphertext copied to another connector or field does not decrypt).

Stored form: ``enc:v1:<key id>:<base64(nonce || ciphertext+tag)>``.

Keys: ``ENCRYPTION_KEY`` is the newest (encrypts); ``ENCRYPTION_KEYS`` (comma-separated)
lists older ones still accepted for decryption. A key is 32 characters (used as its UTF-8
bytes, as the original service documented) or 32 bytes in base64. The key id is derived
from the key, so it needs no bookkeeping.

Error handling: a malformed key raises :class:`~engine.errors.ConfigurationError`; a value
that cannot be decrypted raises :class:`SecretError`, whose message never contains the value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets
from pathlib import Path

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import ConfigurationError, SluiceError

logger = logging.getLogger(__name__)

PREFIX = "enc:v1:"
KEY_FILE = "encryption.key"


class SecretError(SluiceError):
    """A stored secret cannot be decrypted (unknown key id, tampered, or swapped)."""


def parse_key(text: str, name: str = "ENCRYPTION_KEY") -> bytes:
    """32 characters, or 32 bytes in base64 (standard or URL-safe)."""
    text = text.strip()
    if len(text) == 32:
        raw = text.encode()
        if len(raw) == 32:
            return raw
    padded = text + "=" * (-len(text) % 4)
    for decode in (base64.standard_b64decode, base64.urlsafe_b64decode):
        try:
            decoded = decode(padded)
        except (binascii.Error, ValueError):
            continue
        if len(decoded) == 32:
            return decoded
    raise ConfigurationError(
        f"{name} must be 32 characters or 32 bytes in base64 (got {len(text)} characters)"
    )


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"sluice-key-id:" + key).hexdigest()[:12]


@attrs.frozen
class Keyring:
    """The newest key (for encryption) and every key accepted for decryption."""

    current: bytes = attrs.field(repr=False)
    older: tuple[bytes, ...] = attrs.field(default=(), repr=False)

    @property
    def current_id(self) -> str:
        return key_id(self.current)

    def _by_id(self) -> dict[str, bytes]:
        return {key_id(k): k for k in (*self.older, self.current)}

    def encrypt(self, plaintext: str, connector_id: str, field: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(self.current).encrypt(nonce, plaintext.encode(), _aad(connector_id, field))
        return f"{PREFIX}{self.current_id}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, stored: str, connector_id: str, field: str) -> str:
        if not is_encrypted(stored):
            raise SecretError(f"{field} is not an encrypted value")
        try:
            kid, blob = stored[len(PREFIX) :].split(":", 1)
            data = base64.b64decode(blob, validate=True)
        except (ValueError, binascii.Error):
            raise SecretError(f"{field} is not a valid encrypted value") from None
        key = self._by_id().get(kid)
        if key is None:
            raise SecretError(f"{field} was encrypted with an unknown key ({kid})")
        try:
            plain = AESGCM(key).decrypt(data[:12], data[12:], _aad(connector_id, field))
        except (InvalidTag, ValueError):
            raise SecretError(f"{field} does not decrypt for this connector") from None
        return plain.decode()

    def needs_rotation(self, stored: str) -> bool:
        return not stored.startswith(f"{PREFIX}{self.current_id}:")


def is_encrypted(value: str) -> bool:
    return value.startswith(PREFIX)


def _aad(connector_id: str, field: str) -> bytes:
    return f"sluice:{connector_id}:{field}".encode()


def load_keyring(
    current: str | None, older: str | None, *, embedded: bool, data_dir: Path
) -> Keyring:
    """The keyring from the environment. With an external database a key is required;
    with the embedded one a key is created once in the data directory (mode 0600)."""
    olds = tuple(parse_key(k, "ENCRYPTION_KEYS") for k in (older or "").split(",") if k.strip())
    if current:
        return Keyring(parse_key(current), olds)
    if not embedded:
        raise ConfigurationError(
            "ENCRYPTION_KEY is required with an external database: set it to 32 characters"
            " or 32 random bytes in base64 (python -c 'import secrets, base64;"
            " print(base64.b64encode(secrets.token_bytes(32)).decode())')"
        )
    path = data_dir / KEY_FILE
    if path.exists():
        return Keyring(parse_key(path.read_text(), str(path)), olds)
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    # Written whole under a private name, then linked into place: a process starting at
    # the same moment (workers) either wins the link or reads the winner's complete key.
    scratch = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(key).decode() + "\n")
    try:
        os.link(scratch, path)
    except FileExistsError:
        return Keyring(parse_key(path.read_text(), str(path)), olds)
    finally:
        scratch.unlink()
    logger.warning(
        "no ENCRYPTION_KEY set: created one in %s (mode 0600); back it up, or stored"
        " credentials cannot be decrypted",
        path,
    )
    return Keyring(key, olds)
