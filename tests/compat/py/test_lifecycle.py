"""The certificate lifecycle through the official Python SDK (strict schema validation on): a
txt pack is ordered, checked against a loopback DNS server and fails with a reason, the records
are created, and the pack turns active with its certificate."""

from __future__ import annotations

import time

from cloudflare.types.ssl import Verification
from cloudflare.types.ssl.certificate_pack_create_response import CertificatePackCreateResponse
from cloudflare.types.ssl.certificate_pack_get_response import CertificatePackGetResponse


def items_of(client, zone_id: str, pack_id: str, *, retry: bool) -> list[Verification]:
    items = client.ssl.verification.get(zone_id=zone_id, retry=retry)
    for item in items:
        assert isinstance(item, Verification)
    return [v for v in items if v.cert_pack_uuid == pack_id]


def test_txt_pack_turns_active_once_the_records_exist(lifecycle_server, dns):
    client = lifecycle_server.client()
    zone = lifecycle_server.create_zone("lifecycle")
    hosts = [zone["name"], f"www.{zone['name']}"]
    pack = client.ssl.certificate_packs.create(
        zone_id=zone["id"],
        type="advanced",
        hosts=hosts,
        validation_method="txt",
        validity_days=90,
        certificate_authority="lets_encrypt",
    )
    assert isinstance(pack, CertificatePackCreateResponse)

    # retry=true waits for the check it asks for: no record yet, and it says why.
    mine = items_of(client, zone["id"], pack.id, retry=True)
    assert {(v.model_extra or {}).get("hostname") for v in mine} == set(hosts), mine
    records = {}
    for item in mine:
        assert item.certificate_status == "authorizing", item
        assert item.verification_status is False, item
        extra = item.model_extra or {}
        reason = extra.get("verification_error", "")
        assert reason.startswith("no TXT record at _acme-challenge."), item
        assert extra.get("last_checked_on"), item
        info = (item.verification_info.model_extra or {}) if item.verification_info else {}
        records[info["txt_name"]] = info["txt_value"]
    assert sorted(records) == sorted(f"_acme-challenge.{h}" for h in hosts), records

    for name, value in records.items():
        dns.set_txt(name, value)

    deadline = time.monotonic() + 10
    while True:
        mine = items_of(client, zone["id"], pack.id, retry=True)
        if mine and all(v.certificate_status == "active" for v in mine):
            break
        assert time.monotonic() < deadline, f"not active within 10 s: {mine}"
        time.sleep(0.2)
    for item in mine:
        assert item.verification_status is True, item

    got = client.ssl.certificate_packs.get(pack.id, zone_id=zone["id"])
    assert isinstance(got, CertificatePackGetResponse)
    assert got.status == "active", got
    assert len(got.certificates) == 1, got
    certificate = got.certificates[0]
    assert sorted(certificate.hosts) == sorted(hosts), certificate
    assert certificate.status == "active", certificate
    assert certificate.expires_on is not None, certificate
    assert not got.validation_errors, got
