"""Google Health notification signatures: Tink's output format, verified with Tink against the
public keyset in Tink's JSON format, fetched from its URL, refetched for a rotated key at most once
a minute, and refused (401, counted, never a 500) whenever they do not verify."""

from __future__ import annotations

import base64
import json
import time

import pytest
import tink
from cryptography.hazmat.primitives.asymmetric import ec
from tink import secret_key_access, signature

from ingestion.models import WebhookRejection
from ingestion.webhooks import WebhookRejected
from sources.providers.fitbit import sandbox as fitbit_hooks
from sources.providers.fitbit import webhooks as health

HEALTH_URL = "/webhooks/fitbit/"
signature.register()


@pytest.fixture
def fetches(monkeypatch) -> list[str]:
    """The keyset URLs downloaded, in order (the real download, over HTTP, counted)."""
    seen: list[str] = []
    download = health._keyset_download

    def counted(url: str) -> str:
        seen.append(url)
        return download(url)

    monkeypatch.setattr(health, "_keyset_download", counted)
    return seen


@pytest.fixture
def hooks(sandbox, settings):
    settings.SIBLING_PUBLIC_URL = sandbox.url
    return sandbox


def _body(day: str = "2026-11-01") -> bytes:
    notification = fitbit_hooks.health_notification_body("hu-nobody", "steps", [(day, day)])
    return json.dumps(notification).encode()


def _post(client, settings, body: bytes, header: str | None, name: str = "X-HEALTHAPI-SIGNATURE"):
    extra = {"HTTP_AUTHORIZATION": settings.FITBIT_WEBHOOK_SECRET}
    if header is not None:
        extra["HTTP_" + name.replace("-", "_")] = header
    return client.post(HEALTH_URL, data=body, content_type="application/json", **extra)


def _rejected(reason: str) -> int:
    return sum(r.count for r in WebhookRejection.objects.filter(provider="fitbit", reason=reason))


# --- Tink's formats, independent of the sandbox --------------------------------------------------


def _tink_keyset() -> tuple[tink.KeysetHandle, str]:
    private = tink.new_keyset_handle(signature.signature_key_templates.ECDSA_P256)
    public = tink.json_proto_keyset_format.serialize_without_secret(private.public_keyset_handle())
    return private, public


def test_a_signature_made_by_tink_verifies_against_a_tink_json_keyset(monkeypatch):
    private, public_json = _tink_keyset()
    url = "https://keys.example/keyset.json"
    monkeypatch.setattr(health, "_keyset_download", lambda u: public_json)
    body = b'{"data":{"dataType":"steps"}}'
    output = private.primitive(signature.PublicKeySign).sign(body)
    # Tink's TINK output: 0x01, the primary key's id (4 bytes, big-endian), the DER signature.
    primary = json.loads(public_json)["primaryKeyId"]
    assert output[0] == 1 and int.from_bytes(output[1:5], "big") == primary
    assert output[5] == 0x30  # a DER SEQUENCE

    health.signature_verify(base64.b64encode(output).decode(), body, url)
    with pytest.raises(WebhookRejected, match="bad signature"):
        health.signature_verify(base64.b64encode(output).decode(), body + b" ", url)


def test_a_disabled_key_in_a_tink_json_keyset_does_not_verify(monkeypatch):
    private, public_json = _tink_keyset()
    body = b"{}"
    output = base64.b64encode(private.primitive(signature.PublicKeySign).sign(body)).decode()
    disabled = json.loads(public_json)
    disabled["key"][0]["status"] = "DISABLED"
    # Tink refuses a keyset whose primary key is disabled: Google's keeps an enabled primary.
    _other, other_json = _tink_keyset()
    enabled = json.loads(other_json)["key"][0]
    disabled["key"].append(enabled)
    disabled["primaryKeyId"] = enabled["keyId"]
    monkeypatch.setattr(health, "_keyset_download", lambda u: json.dumps(disabled))
    with pytest.raises(WebhookRejected, match="bad signature"):
        health.signature_verify(output, body, "https://keys.example/keyset.json")


def test_a_keyset_that_is_not_tinks_json_is_refused():
    with pytest.raises(ValueError):
        health.keyset_parse('{"keys": [{"kty": "EC"}]}')
    private, _public = _tink_keyset()
    with_secret = tink.json_proto_keyset_format.serialize(private, secret_key_access.TOKEN)
    with pytest.raises(ValueError):
        health.keyset_parse(with_secret)  # a private key is never accepted as the public keyset


# --- Against the sandbox, over HTTP ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_keyset_comes_from_the_url_setting_per_environment(client, hooks, settings, fetches):
    sandbox_url = health.Fitbit.url("webhook_keyset")
    assert sandbox_url == (
        f"{settings.SIBLING_SANDBOX_BASE_URL}/google/health/webhooks/webhooks_public_keyset.json"
    )
    body = _body()
    assert _post(client, settings, body, fitbit_hooks.health_signature(body)).status_code == 204
    assert fetches == [sandbox_url]
    real = {**settings.SIBLING_PROVIDERS["fitbit"], "sandbox": False}
    settings.SIBLING_PROVIDERS = {**settings.SIBLING_PROVIDERS, "fitbit": real}
    assert health.Fitbit.url("webhook_keyset") == (
        "https://www.gstatic.com/googlehealthapi/webhooks/webhooks_public_keyset.json"
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", ["GOOGLE-HEALTH-API-SIGNATURE", "X-HEALTHAPI-SIGNATURE"])
def test_a_valid_signature_under_either_header_is_accepted(client, hooks, settings, name):
    body = _body()
    answer = _post(client, settings, body, fitbit_hooks.health_signature(body), name)
    assert answer.status_code == 204


@pytest.mark.django_db(transaction=True)
def test_a_rotated_key_is_fetched_once_then_verified(client, hooks, settings, fetches):
    old_id, old_key = fitbit_hooks.health_signing_key()
    body = _body()
    assert _post(client, settings, body, fitbit_hooks.health_signature(body)).status_code == 204
    new_id = fitbit_hooks.health_key_rotate()
    assert new_id != old_id
    for day in ("2026-11-02", "2026-11-03"):
        body = _body(day)
        assert _post(client, settings, body, fitbit_hooks.health_signature(body)).status_code == 204
    assert len(fetches) == 2  # the first keyset, and one refetch for the new key id
    # A notification the old key signed (a retry) still verifies while that key is enabled.
    body = _body("2026-11-04")
    late = fitbit_hooks.health_signature(body, key=old_key, key_id=old_id)
    assert _post(client, settings, body, late).status_code == 204
    assert len(fetches) == 2


@pytest.mark.django_db(transaction=True)
def test_a_disabled_key_is_refused(client, hooks, settings, fetches):
    old_id, old_key = fitbit_hooks.health_signing_key()
    body = _body()
    assert _post(client, settings, body, fitbit_hooks.health_signature(body)).status_code == 204
    fitbit_hooks.health_key_rotate()
    assert fitbit_hooks.health_keys_disable() == [old_id]
    served = {k["keyId"]: k["status"] for k in fitbit_hooks.health_public_keyset()["key"]}
    assert served[old_id] == "DISABLED"
    body = _body("2026-11-02")  # signed by the new key: the keyset is fetched again
    assert _post(client, settings, body, fitbit_hooks.health_signature(body)).status_code == 204
    body = _body("2026-11-03")
    forged_late = fitbit_hooks.health_signature(body, key=old_key, key_id=old_id)
    answer = _post(client, settings, body, forged_late)
    assert answer.status_code == 401
    assert _rejected("bad signature") == 1
    assert len(fetches) == 2


@pytest.mark.django_db(transaction=True)
def test_unknown_key_ids_are_refused_and_refetch_at_most_once_a_minute(
    client, hooks, settings, fetches
):
    body = _body()
    other = ec.generate_private_key(ec.SECP256R1())
    minute = int(time.time() // 60)
    for key_id in range(1000, 1020):
        forged = fitbit_hooks.health_signature(body, key=other, key_id=key_id)
        assert _post(client, settings, body, forged).status_code == 401
    # Another process: nothing held locally, the shared cache has the keyset and the budget.
    health.keyset_forget()
    for key_id in range(2000, 2010):
        forged = fitbit_hooks.health_signature(body, key=other, key_id=key_id)
        assert _post(client, settings, body, forged).status_code == 401
    assert _rejected("unknown signing key") == 30
    minutes = int(time.time() // 60) - minute + 1
    # The first keyset, then one refetch per minute the test spanned.
    assert 2 <= len(fetches) <= 1 + minutes


@pytest.mark.django_db(transaction=True)
def test_broken_signature_headers_are_401_and_counted(client, hooks, settings):
    body = _body()
    valid = fitbit_hooks.health_signature(body)
    raw = base64.b64decode(valid)
    cases = {
        "missing signature": [None, ""],
        "malformed signature": [
            base64.b64encode(raw[:4]).decode(),  # the key id cut short
            base64.b64encode(raw[:1]).decode(),
            valid[:-3],  # cut mid-way: not base64 any more
            "%%%not base64%%%",
            "A" * 4000,
            base64.b64encode(b"\x07" + raw[1:]).decode(),  # not a Tink prefix
        ],
        "bad signature": [
            base64.b64encode(raw[:-6]).decode(),  # the DER signature truncated
            base64.b64encode(raw[:5] + b"not a signature").decode(),
        ],
    }
    for reason, headers in cases.items():
        for header in headers:
            answer = _post(client, settings, body, header)
            assert answer.status_code == 401, (reason, header)
        assert _rejected(reason) == len(headers), reason
    # The wrong body: a valid signature of another notification.
    answer = _post(client, settings, _body("2026-11-02"), valid)
    assert answer.status_code == 401
    assert _rejected("bad signature") == 3


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_keyset_is_503_which_google_retries(client, settings, hooks):
    settings.SIBLING_SANDBOX_BASE_URL = "http://127.0.0.1:9/sandbox"  # nothing listens
    body = _body()
    answer = _post(client, settings, body, fitbit_hooks.health_signature(body))
    assert answer.status_code == 503
