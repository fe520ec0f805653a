"""Reader access codes and the admin passcode.

A reader's code is ``<login>-<secret>`` (e.g. ``k3v9qa-Xy7…``): the login part finds the reader's row without
trying every hash; the secret part is checked against a salted scrypt hash (RFC 7914; n=2^14, r=8, p=1: ~16 MiB and
tens of milliseconds per check, so stolen hashes are slow to guess). The code itself is shown once, when the
reader is added or the code is reset, and never stored.

The admin passcode comes from ``[study] admin_passcode`` and is compared in constant time (`hmac.compare_digest`).
An empty passcode locks the admin view: there is no default password to forget to change.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from models.errors import AccessDeniedError

__all__ = ["NewCode", "new_code", "hash_secret", "split_code", "verify_secret", "check_admin_passcode",
           "ADMIN_LOCKED"]

_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024, "dklen": 32}
_LOGIN_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no look-alikes (0/o, 1/l/i)

ADMIN_LOCKED = ("The study admin view is locked: no admin passcode is configured. Set [study] admin_passcode in "
                "the config file (or the environment variable MEWM_STUDY__ADMIN_PASSCODE) and restart the app.")


@dataclass(frozen=True)
class NewCode:
    """A freshly made access code: ``code`` to hand to the reader, and what the database keeps."""

    code: str
    login: str
    salt: bytes
    digest: bytes


def hash_secret(secret: str, salt: bytes) -> bytes:
    """scrypt of ``secret`` with ``salt`` (32 bytes)."""
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)


def new_code() -> NewCode:
    """A random code ``<6-letter login>-<16-character secret>`` (about 96 bits of secret) and its salted hash."""
    login = "".join(secrets.choice(_LOGIN_ALPHABET) for _ in range(6))
    secret = secrets.token_urlsafe(12)
    salt = secrets.token_bytes(16)
    return NewCode(code=f"{login}-{secret}", login=login, salt=salt, digest=hash_secret(secret, salt))


def split_code(code: str) -> tuple[str, str]:
    """``(login, secret)`` of a typed code (surrounding spaces ignored). Raises `AccessDeniedError` if malformed."""
    login, sep, secret = str(code).strip().partition("-")
    if not sep or not login or not secret:
        raise AccessDeniedError("That access code is not valid. Check it with the study administrator.")
    return login.lower(), secret


def verify_secret(secret: str, salt: bytes, digest: bytes) -> bool:
    """Whether ``secret`` hashes to ``digest`` with ``salt`` (constant-time comparison)."""
    return hmac.compare_digest(hash_secret(secret, salt), digest)


def check_admin_passcode(typed: str, configured: str) -> None:
    """Return when ``typed`` equals the configured passcode; raise `AccessDeniedError` otherwise.

    Raises:
        AccessDeniedError: no passcode configured (`ADMIN_LOCKED`), or a wrong one.
    """
    if not configured:
        raise AccessDeniedError(ADMIN_LOCKED)
    if not hmac.compare_digest(str(typed).encode(), configured.encode()):
        raise AccessDeniedError("Wrong admin passcode.")
