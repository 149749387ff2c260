"""Verify a Manus webhook before reading it (shared/apis.md section 2, "Webhooks").

Manus signs `"{timestamp}.{url}.{sha256_hex(body)}"` with RSA-2048, PKCS#1 v1.5. The
vendor's docs disagree on one detail: the Python and Node examples hash that string with
SHA-256 and then verify the digest *as the message* (so SHA-256 is applied twice), the Go
example verifies the string itself. We follow the Python example, as the apis.md notes
decide, and accept the single-hash form too, so either variant in production verifies.

A pure function: the control port's route hands it the raw body, the full URL Manus
called, the two headers and the public key (from config, or fetched once and cached).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SIGNATURE_HEADER = "X-Webhook-Signature"
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
MAX_AGE_SECONDS = 300


class WebhookRejected(Exception):
    """Why a webhook was refused (for the log; answer 401 without details)."""


def signed_content(timestamp: str, url: str, body: bytes) -> bytes:
    return f"{timestamp}.{url}.{hashlib.sha256(body).hexdigest()}".encode()


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the Manus webhook key must be an RSA public key")
    return key


def verify_webhook(
    public_key: rsa.RSAPublicKey | str,
    url: str,
    body: bytes,
    signature_b64: str | None,
    timestamp: str | None,
    *,
    now: float | None = None,
    max_age_seconds: float = MAX_AGE_SECONDS,
) -> None:
    """Return if the webhook is authentic and fresh; raise WebhookRejected otherwise."""
    if not signature_b64 or not timestamp:
        raise WebhookRejected(f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER}")
    try:
        sent_at = int(timestamp.strip())
    except ValueError as error:
        raise WebhookRejected("the timestamp is not a number") from error
    current = time.time() if now is None else now
    if abs(current - sent_at) > max_age_seconds:
        raise WebhookRejected("the timestamp is outside the 5-minute window (replay or clock skew)")
    try:
        signature = base64.b64decode(signature_b64.strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise WebhookRejected("the signature is not base64") from error
    key = load_public_key(public_key) if isinstance(public_key, str) else public_key
    content = signed_content(timestamp.strip(), url, body)
    for message in (hashlib.sha256(content).digest(), content):  # the Python docs' form first
        try:
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return
    raise WebhookRejected("the signature does not match")
