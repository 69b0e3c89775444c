"""The error classes the official Python SDK raises for what the server answers: missing, bad and
insufficient credentials, and unknown ids. The SDK maps 400 -> BadRequestError,
401 -> AuthenticationError, 403 -> PermissionDeniedError, 404 -> NotFoundError."""

from __future__ import annotations

import uuid

import pytest
from cloudflare import BadRequestError, NotFoundError, Omit, PermissionDeniedError

from conftest import DEV_EMAIL, DEV_PACK_ID, DEV_ZONE_ID


def error_codes(error) -> list[int]:
    return [e.code for e in error.errors]


def test_missing_credentials_is_refused_before_sending(server):
    sdk = server.client(api_token=None)
    with pytest.raises(TypeError, match="Could not resolve authentication method"):
        sdk.ssl.verification.get(zone_id=DEV_ZONE_ID)


def test_missing_credentials_answered_400_9106(server):
    sdk = server.client(api_token=None)
    with pytest.raises(BadRequestError) as raised:
        # Explicitly omitting the header is the SDK's way to send a request without credentials.
        sdk.ssl.verification.get(zone_id=DEV_ZONE_ID, extra_headers={"Authorization": Omit()})
    assert raised.value.status_code == 400
    assert error_codes(raised.value) == [9106]
    assert not raised.value.response.request.headers.get("authorization")


def test_unknown_token_is_permission_denied(server):
    sdk = server.client(api_token="Xy" * 20)
    with pytest.raises(PermissionDeniedError) as raised:
        sdk.ssl.verification.get(zone_id=DEV_ZONE_ID)
    assert raised.value.status_code == 403
    assert error_codes(raised.value)[0] == 10000


def test_wrong_global_key_is_permission_denied(server):
    sdk = server.client(api_email=DEV_EMAIL, api_key="0" * 37)
    with pytest.raises(PermissionDeniedError) as raised:
        sdk.ssl.certificate_packs.quota.get(zone_id=DEV_ZONE_ID)
    assert raised.value.status_code == 403
    assert error_codes(raised.value)[0] in (10000, 9103)


def test_global_key_of_another_user_is_not_accepted_for_dev_email(server):
    _, other_key = server.create_user()
    sdk = server.client(api_email=DEV_EMAIL, api_key=other_key)
    with pytest.raises(PermissionDeniedError) as raised:
        sdk.ssl.verification.get(zone_id=DEV_ZONE_ID)
    assert error_codes(raised.value)[0] in (10000, 9103)


def test_malformed_authorization_is_bad_request(server):
    sdk = server.client(api_token="not a token")
    with pytest.raises(BadRequestError) as raised:
        sdk.ssl.verification.get(zone_id=DEV_ZONE_ID)
    assert raised.value.status_code == 400
    assert error_codes(raised.value)[0] == 6003


def test_malformed_global_key_is_bad_request(server):
    sdk = server.client(api_email=DEV_EMAIL, api_key="not-a-hex-key")
    with pytest.raises(BadRequestError) as raised:
        sdk.ssl.verification.get(zone_id=DEV_ZONE_ID)
    assert raised.value.status_code == 400
    assert error_codes(raised.value)[0] == 6003


def test_read_only_token_reads_but_cannot_write(server, order_pack):
    zone = server.create_zone()
    writer = server.client()
    pack = order_pack(writer, zone)
    reader = server.client(api_token=server.create_token("SSL and Certificates Read"))

    assert [v for v in reader.ssl.verification.get(zone_id=zone["id"]) if v.cert_pack_uuid == pack.id]
    assert reader.ssl.certificate_packs.get(pack.id, zone_id=zone["id"]).id == pack.id
    assert [p.id for p in reader.ssl.certificate_packs.list(zone_id=zone["id"], status="all")] == [pack.id]
    assert reader.ssl.certificate_packs.quota.get(zone_id=zone["id"]).advanced.used == 1

    writes = {
        "order": lambda: order_pack(reader, zone, extra_host=f"w.{zone['name']}"),
        "edit pack": lambda: reader.ssl.certificate_packs.edit(pack.id, zone_id=zone["id"], cloudflare_branding=True),
        "delete pack": lambda: reader.ssl.certificate_packs.delete(pack.id, zone_id=zone["id"]),
        "edit verification": lambda: reader.ssl.verification.edit(
            pack.id, zone_id=zone["id"], validation_method="txt"),
    }
    for name, write in writes.items():
        with pytest.raises(PermissionDeniedError) as raised:
            write()
        assert raised.value.status_code == 403, name
        assert error_codes(raised.value)[0] in (9109, 10000), name
    # Nothing was changed by the refused writes.
    assert writer.ssl.certificate_packs.get(pack.id, zone_id=zone["id"]).id == pack.id
    assert writer.ssl.certificate_packs.quota.get(zone_id=zone["id"]).advanced.used == 1


def test_zone_scoped_token_cannot_read_other_zones(server):
    mine = server.create_zone()
    scoped = server.client(api_token=server.create_token("SSL and Certificates Read", zones=(mine["id"],)))
    assert scoped.ssl.verification.get(zone_id=mine["id"]) == []
    with pytest.raises(PermissionDeniedError) as raised:
        scoped.ssl.verification.get(zone_id=DEV_ZONE_ID)
    assert error_codes(raised.value)[0] in (9109, 10000)


def test_mtls_read_permission_reads_verification(server):
    sdk = server.client(api_token=server.create_token("Access: Mutual TLS Certificates Read"))
    assert [v for v in sdk.ssl.verification.get(zone_id=DEV_ZONE_ID) if v.cert_pack_uuid == DEV_PACK_ID]


def test_unknown_zone_is_not_found(client):
    unknown_zone = uuid.uuid4().hex
    calls = {
        "verification": lambda: client.ssl.verification.get(zone_id=unknown_zone),
        "list": lambda: client.ssl.certificate_packs.list(zone_id=unknown_zone),
        "quota": lambda: client.ssl.certificate_packs.quota.get(zone_id=unknown_zone),
    }
    for name, call in calls.items():
        with pytest.raises(NotFoundError) as raised:
            call()
        assert raised.value.status_code == 404, name
        assert error_codes(raised.value)[0] == 7003, name


def test_unknown_pack_is_not_found(client):
    unknown_pack = str(uuid.uuid4())
    calls = {
        "get": lambda: client.ssl.certificate_packs.get(unknown_pack, zone_id=DEV_ZONE_ID),
        "edit": lambda: client.ssl.certificate_packs.edit(unknown_pack, zone_id=DEV_ZONE_ID, cloudflare_branding=True),
        "delete": lambda: client.ssl.certificate_packs.delete(unknown_pack, zone_id=DEV_ZONE_ID),
        "edit verification": lambda: client.ssl.verification.edit(
            unknown_pack, zone_id=DEV_ZONE_ID, validation_method="txt"),
        "malformed id": lambda: client.ssl.certificate_packs.get("not-a-pack-id", zone_id=DEV_ZONE_ID),
    }
    for name, call in calls.items():
        with pytest.raises(NotFoundError) as raised:
            call()
        assert raised.value.status_code == 404, name
        codes = error_codes(raised.value)
        assert codes[0] == 7003, (name, codes)


def test_pack_of_another_zone_is_not_found(server, client, order_pack):
    zone = server.create_zone()
    pack = order_pack(client, zone)
    with pytest.raises(NotFoundError):
        client.ssl.certificate_packs.get(pack.id, zone_id=DEV_ZONE_ID)
    with pytest.raises(NotFoundError):
        client.ssl.certificate_packs.get(DEV_PACK_ID, zone_id=zone["id"])
