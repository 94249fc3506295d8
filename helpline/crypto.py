"""Encryption of personal fields at rest, and the keyed hash that recognises a returning caller.

`HELPLINE_ENCRYPTION_KEY` holds one Fernet key, or several separated by commas during a key rotation:
the first encrypts, all of them decrypt. The keyed hash uses a key derived from the first, so the hash
of a number reveals nothing to someone who has the database but not the key.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class VaultKeyError(ValueError):
    """The configured encryption key cannot be used."""


class Vault:
    """Encrypts and decrypts personal fields, and hashes caller numbers, with the configured keys."""

    def __init__(self, keys: str):
        parts = [part.strip() for part in keys.split(",") if part.strip()]
        if not parts:
            raise VaultKeyError("encryption_key: no key given")
        try:
            self._fernets = [Fernet(part.encode()) for part in parts]
        except (ValueError, TypeError):
            raise VaultKeyError("encryption_key: not a Fernet key (32 url-safe base64-encoded bytes)") from None
        self._multi = MultiFernet(self._fernets)
        self._hash_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"helpline caller hash v1"
        ).derive(parts[0].encode())

    @staticmethod
    def generate_key() -> str:
        """A new random key, in the form `HELPLINE_ENCRYPTION_KEY` takes."""
        return Fernet.generate_key().decode()

    def encrypt(self, plaintext: str | None) -> str | None:
        """Encrypt a text field; None stays None."""
        if plaintext is None:
            return None
        return self._multi.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str | None) -> str | None:
        """Decrypt a field written by `encrypt`; raises ValueError if no configured key opens it."""
        if token is None:
            return None
        try:
            return self._multi.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise ValueError("a stored field cannot be decrypted with the configured keys") from None

    def rotate(self, token: str | None) -> str | None:
        """Re-encrypt a field under the first (newest) key."""
        if token is None:
            return None
        return self._multi.rotate(token.encode("ascii")).decode("ascii")

    def keyed_hash(self, value: str) -> str:
        """A stable HMAC-SHA256 of `value`, to match a returning caller without storing the number twice."""
        return hmac.new(self._hash_key, value.encode("utf-8"), hashlib.sha256).hexdigest()
