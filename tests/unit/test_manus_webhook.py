"""The Manus webhook verifier: authentic and fresh passes, anything else is refused."""

from __future__ import annotations

import base64
import hashlib
import time

import pytest

pytest.importorskip("cryptography", reason="the webhook verifier needs the cryptography package")

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ai_employee.clients.manus_webhook import (
    WebhookRejected,
    signed_content,
    verify_webhook,
)

URL = "https://aie.example.com/webhooks/manus"
BODY = b'{"event_type":"task_stopped","task_detail":{"task_id":"t1","stop_reason":"finish"}}'
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = (
    KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def sign(timestamp: str, body: bytes = BODY, *, double_hash: bool = True) -> str:
    """How Manus signs, per its Python example (SHA-256 of the content, signed with SHA-256)."""
    content = signed_content(timestamp, URL, body)
    message = hashlib.sha256(content).digest() if double_hash else content
    return base64.b64encode(KEY.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def test_authentic_fresh_webhook_passes() -> None:
    now = str(int(time.time()))
    verify_webhook(PEM, URL, BODY, sign(now), now)


def test_single_hash_variant_of_the_docs_passes_too() -> None:
    now = str(int(time.time()))
    verify_webhook(PEM, URL, BODY, sign(now, double_hash=False), now)


def test_tampered_body_is_refused() -> None:
    now = str(int(time.time()))
    with pytest.raises(WebhookRejected, match="does not match"):
        verify_webhook(PEM, URL, BODY + b" ", sign(now), now)


def test_other_url_is_refused() -> None:
    now = str(int(time.time()))
    with pytest.raises(WebhookRejected, match="does not match"):
        verify_webhook(PEM, URL + "?x=1", BODY, sign(now), now)


def test_stale_timestamp_is_refused_even_when_signed() -> None:
    old = str(int(time.time()) - 301)
    with pytest.raises(WebhookRejected, match="5-minute window"):
        verify_webhook(PEM, URL, BODY, sign(old), old)


def test_missing_headers_are_refused() -> None:
    with pytest.raises(WebhookRejected, match="missing"):
        verify_webhook(PEM, URL, BODY, None, str(int(time.time())))


def test_garbage_signature_is_refused() -> None:
    now = str(int(time.time()))
    with pytest.raises(WebhookRejected, match="not base64"):
        verify_webhook(PEM, URL, BODY, "%%%", now)
