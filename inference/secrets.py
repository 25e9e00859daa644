"""Upstream API keys encrypted at rest (Fernet), with keys from the environment.

``EncryptedTextField`` stores ``fernet:<token>`` in the database and gives back the
plaintext in Python, so the ORM, the registry and ``endpoint_sync`` keep working with
plain strings while a database dump, a backup or a read-only SQL console shows nothing
usable. The plaintext leaves the process only towards the upstream (as its bearer key).

Keys: ``INFERENCE_ENCRYPTION_KEYS`` (comma-separated; the first encrypts, every one
decrypts, so a key is rotated by putting the new one first and running
``manage.py rotate_endpoint_keys``). Each entry is a Fernet key (44 url-safe base64
characters) or any passphrase, stretched with HKDF-SHA256. Unset: one key derived from
SECRET_KEY, which keeps the embedded run working without configuration but ties the
stored keys to SECRET_KEY (set the variable in production, docs/inference.md).

A value written before encryption existed (no ``fernet:`` prefix) is read as it is;
migration ``inference.0002`` encrypts those rows.
"""

from __future__ import annotations

import base64
import binascii
import logging
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import models

log = logging.getLogger(__name__)

PREFIX = "fernet:"
# Fixed salt: the derivation only has to turn a passphrase into 32 uniform bytes; the
# passphrase itself is the secret (and SECRET_KEY-derived keys must differ from Django's own uses).
_SALT = b"vh-inference-endpoint-keys"


def _fernet_key(secret: str) -> bytes:
    """A Fernet key given as such, else one derived from the passphrase."""
    candidate = secret.strip()
    if len(candidate) == 44:
        try:
            if len(base64.urlsafe_b64decode(candidate)) == 32:
                return candidate.encode()
        except (binascii.Error, ValueError):
            pass
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=b"fernet").derive(candidate.encode())
    return base64.urlsafe_b64encode(raw)


@lru_cache(maxsize=4)
def _cipher(secrets: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(_fernet_key(s)) for s in secrets])


def cipher() -> MultiFernet:
    """The configured keys (cached per value, so a test that changes the setting gets new ones)."""
    secrets = tuple(settings.INFERENCE_ENCRYPTION_KEYS) or (settings.SECRET_KEY,)
    return _cipher(secrets)


def encrypt(plaintext: str) -> str:
    if not plaintext:
        return ""
    return PREFIX + cipher().encrypt(plaintext.encode()).decode()


def decrypt(stored: str) -> str:
    """The plaintext of a stored value; a legacy plaintext value as it is; "" when no key opens it."""
    if not stored or not stored.startswith(PREFIX):
        return stored or ""
    try:
        return cipher().decrypt(stored[len(PREFIX) :].encode()).decode()
    except InvalidToken:
        # Never raise from a row read: one unreadable key must not take the registry down.
        log.error(
            "an endpoint API key cannot be decrypted with INFERENCE_ENCRYPTION_KEYS (changed, or SECRET_KEY "
            "changed while the variable was unset); that endpoint is used without a key until it is re-entered"
        )
        return ""


def rotate(stored: str) -> str:
    """Re-encrypt under the first key (after a key was added in front)."""
    if not stored:
        return ""
    if not stored.startswith(PREFIX):
        return encrypt(stored)
    return PREFIX + cipher().rotate(stored[len(PREFIX) :].encode()).decode()


class EncryptedTextField(models.TextField):
    """Plaintext in Python, ``fernet:<token>`` in the database (see the module docstring)."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> str:
        return decrypt(value) if value is not None else ""

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        if value.startswith(PREFIX):  # already a token (e.g. written back by rotate())
            return value
        return encrypt(value)
