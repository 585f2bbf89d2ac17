"""Signing keys the sandbox generates once, stores, and serves the public halves of.

One current key per purpose (a provider's webhook signatures, Google's ID tokens). Rotation keeps
the old key, marked expired, so a verifier that fetches it by kid sees `expired_at`, as providers
that serve their webhook keys by kid do.
"""

from __future__ import annotations

import uuid
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.db import IntegrityError
from django.utils import timezone

from .models import SigningKey

KeyKind = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _generate_pem(kind: KeyKind) -> str:
    if kind == "rsa":
        private: PrivateKey = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private = ec.generate_private_key(ec.SECP256R1())
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def signing_key_stored(purpose: str, kind: KeyKind) -> SigningKey:
    """The current key for `purpose`, generated on first use."""
    stored = SigningKey.objects.filter(purpose=purpose).first()
    if stored is not None:
        return stored
    try:
        return SigningKey.objects.create(
            purpose=purpose,
            kid=_new_kid(kind),
            private_pem=_generate_pem(kind),
            created_at=timezone.now(),
        )
    except IntegrityError:  # another process created it first: use theirs
        return SigningKey.objects.get(purpose=purpose)


def _new_kid(kind: KeyKind) -> str:
    # Google's kids are 40 hex digits; other providers' EC webhook keys have UUIDs.
    return uuid.uuid4().hex + uuid.uuid4().hex[:8] if kind == "rsa" else str(uuid.uuid4())


def private_key_of(stored: SigningKey) -> PrivateKey:
    private = serialization.load_pem_private_key(stored.private_pem.encode(), password=None)
    if not isinstance(private, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TypeError(f"the stored key {stored.kid} is neither EC nor RSA")
    return private


def signing_key_rotate(purpose: str, kind: KeyKind) -> SigningKey:
    """Expire the current key of `purpose` (kept, fetchable by kid) and make a new current one."""
    current = SigningKey.objects.filter(purpose=purpose).first()
    if current is not None:
        # A conditional update, so two concurrent rotations expire the old key only once.
        SigningKey.objects.filter(pk=current.pk, purpose=purpose).update(
            purpose=f"{purpose}:expired:{current.kid}", expired_at=timezone.now()
        )
    return signing_key_stored(purpose, kind)


def signing_key_by_kid(purpose: str, kid: str) -> SigningKey | None:
    """A current or expired key of `purpose` with this kid, or None."""
    stored = SigningKey.objects.filter(kid=kid).first()
    if stored is None:
        return None
    if stored.purpose == purpose or stored.purpose.startswith(f"{purpose}:expired:"):
        return stored
    return None
