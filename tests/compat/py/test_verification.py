"""`ssl.verification.get` / `.edit` through the official Python SDK, strict schema validation on."""

from __future__ import annotations

import pytest
from cloudflare import BadRequestError
from cloudflare.types.ssl import Verification, VerificationEditResponse

from conftest import DEV_EMAIL, DEV_GLOBAL_KEY, DEV_PACK_ID, DEV_ZONE_ID, DEV_ZONE_NAME

CERTIFICATE_STATUSES = {
    "initializing", "authorizing", "active", "expired", "issuing", "timing_out", "pending_deployment",
}


def assert_dev_zone_verifications(verifications) -> None:
    assert isinstance(verifications, list)
    assert verifications, "the dev zone has a pack, so its verification list is not empty"
    for item in verifications:
        assert isinstance(item, Verification)
        assert item.certificate_status in CERTIFICATE_STATUSES
    dev = [v for v in verifications if v.cert_pack_uuid == DEV_PACK_ID]
    assert dev, f"no verification item for the dev pack {DEV_PACK_ID}: {verifications}"
    # One item per host of the pack; the host rides along as an extra key.
    assert DEV_ZONE_NAME in {(v.model_extra or {}).get("hostname") for v in dev}, dev


def test_get_with_token(client):
    assert_dev_zone_verifications(client.ssl.verification.get(zone_id=DEV_ZONE_ID))


def test_get_with_email_and_global_key(server):
    email_client = server.client(api_email=DEV_EMAIL, api_key=DEV_GLOBAL_KEY)
    raw = email_client.ssl.verification.with_raw_response.get(zone_id=DEV_ZONE_ID)
    # The Python SDK sends the email+key pair and no Authorization header.
    assert raw.http_request.headers["x-auth-email"] == DEV_EMAIL
    assert raw.http_request.headers["x-auth-key"] == DEV_GLOBAL_KEY
    assert "authorization" not in raw.http_request.headers
    assert_dev_zone_verifications(raw.parse())


@pytest.mark.parametrize("auth", ["token", "email+key"])
def test_get_with_retry(server, auth):
    sdk = server.client() if auth == "token" else server.client(api_email=DEV_EMAIL, api_key=DEV_GLOBAL_KEY)
    raw = sdk.ssl.verification.with_raw_response.get(zone_id=DEV_ZONE_ID, retry=True)
    assert raw.http_request.url.params["retry"] == "true"
    assert raw.http_request.url.path == f"/client/v4/zones/{DEV_ZONE_ID}/ssl/verification"
    assert_dev_zone_verifications(raw.parse())


def test_get_lists_one_item_per_host_of_a_pending_pack(server, client, order_pack):
    zone = server.create_zone()
    pack = order_pack(client, zone)
    verifications = client.ssl.verification.get(zone_id=zone["id"])
    mine = [v for v in verifications if v.cert_pack_uuid == pack.id]
    assert mine, verifications
    for item in mine:
        assert item.certificate_status in {"initializing", "authorizing"}
        assert item.validation_method == "txt"
        assert item.verification_type == "cname"  # Cloudflare's word for every DNS-based method
        assert item.verification_status is not True
    # The record the operator must publish is carried next to the spec's key names.
    with_record = [v for v in mine if v.verification_info is not None]
    assert with_record, mine
    info = with_record[0].verification_info
    assert info.record_name == "txt_name" and info.record_target == "txt_value"
    extra = info.model_extra or {}
    assert extra.get("txt_name", "").startswith("_acme-challenge."), info
    assert extra.get("txt_value"), info


def test_edit_switches_method_and_rechecks(server, client, order_pack):
    zone = server.create_zone()
    # No wildcard: http validation can never prove control of a wildcard (CA/B Forum SC45).
    pack = order_pack(client, zone, extra_host=f"www.{zone['name']}")

    switched = client.ssl.verification.edit(pack.id, zone_id=zone["id"], validation_method="http")
    assert isinstance(switched, VerificationEditResponse)
    assert switched.validation_method == "http"
    assert isinstance(switched.status, str) and switched.status
    items = [v for v in client.ssl.verification.get(zone_id=zone["id"]) if v.cert_pack_uuid == pack.id]
    assert items and all(v.validation_method == "http" for v in items), items
    assert all(v.verification_type == "meta tag" for v in items), items

    again = client.ssl.verification.edit(pack.id, zone_id=zone["id"], validation_method="http")
    assert again.validation_method == "http"


def test_edit_to_cname_keeps_pack_valid_for_strict_schema(server, client, order_pack):
    """The pack schema allows only txt/http/email as validation_method while the verification
    endpoint accepts cname: a pack switched to cname must still satisfy the pack schema."""
    zone = server.create_zone()
    pack = order_pack(client, zone, extra_host=f"www.{zone['name']}")
    switched = client.ssl.verification.edit(pack.id, zone_id=zone["id"], validation_method="cname")
    assert switched.validation_method == "cname"
    items = [v for v in client.ssl.verification.get(zone_id=zone["id"]) if v.cert_pack_uuid == pack.id]
    assert items and all(v.validation_method == "cname" for v in items), items
    got = client.ssl.certificate_packs.get(pack.id, zone_id=zone["id"])
    assert got.id == pack.id
    assert got.validation_method in (None, "txt", "http", "email")


def test_edit_with_unknown_method_is_bad_request(server, client, order_pack):
    zone = server.create_zone()
    pack = order_pack(client, zone)
    with pytest.raises(BadRequestError) as raised:
        client.ssl.verification.edit(pack.id, zone_id=zone["id"], validation_method="carrier-pigeon")
    assert raised.value.status_code == 400
    assert raised.value.errors and raised.value.errors[0].code >= 1000
