"""`ssl.certificate_packs` create / list / get / edit / delete / quota through the official
Python SDK, strict schema validation on."""

from __future__ import annotations

import pytest
from cloudflare import NotFoundError
from cloudflare.types.ssl import (
    CertificatePackCreateResponse,
    CertificatePackDeleteResponse,
    CertificatePackEditResponse,
    CertificatePackGetResponse,
    CertificatePackListResponse,
)
from cloudflare.types.ssl.certificate_packs import QuotaGetResponse

from conftest import DEV_PACK_ID, DEV_ZONE_ID, DEV_ZONE_NAME

PENDING = {"initializing", "pending_validation"}


def test_create_get_edit_delete(server, client, order_pack):
    zone = server.create_zone()
    created = order_pack(client, zone)
    assert isinstance(created, CertificatePackCreateResponse)
    assert created.type == "advanced"
    assert created.hosts == [zone["name"], f"*.{zone['name']}"]
    assert created.status in PENDING
    assert created.validation_method == "txt"
    assert created.validity_days == 90
    assert created.certificate_authority == "lets_encrypt"
    assert created.certificates == []

    got = client.ssl.certificate_packs.get(created.id, zone_id=zone["id"])
    assert isinstance(got, CertificatePackGetResponse)
    assert got.id == created.id
    assert got.hosts == created.hosts
    assert got.status in PENDING

    edited = client.ssl.certificate_packs.edit(created.id, zone_id=zone["id"], cloudflare_branding=True)
    assert isinstance(edited, CertificatePackEditResponse)
    assert edited.id == created.id
    assert edited.cloudflare_branding is True
    assert client.ssl.certificate_packs.get(created.id, zone_id=zone["id"]).cloudflare_branding is True

    deleted = client.ssl.certificate_packs.delete(created.id, zone_id=zone["id"])
    assert isinstance(deleted, CertificatePackDeleteResponse)
    assert deleted.id == created.id
    with pytest.raises(NotFoundError) as raised:
        client.ssl.certificate_packs.get(created.id, zone_id=zone["id"])
    assert raised.value.status_code == 404
    assert raised.value.errors[0].code == 7003


def test_get_dev_pack(client):
    pack = client.ssl.certificate_packs.get(DEV_PACK_ID, zone_id=DEV_ZONE_ID)
    assert pack.id == DEV_PACK_ID
    assert pack.status == "active"
    assert DEV_ZONE_NAME in pack.hosts
    assert pack.certificates, "an active pack carries its certificate"
    certificate = pack.certificates[0]
    assert set(certificate.hosts) <= set(pack.hosts)
    assert certificate.expires_on is not None  # strict mode parsed it as a datetime


def test_quota_counts_orders_and_deletions(server, client, order_pack):
    zone = server.create_zone()
    before = client.ssl.certificate_packs.quota.get(zone_id=zone["id"])
    assert isinstance(before, QuotaGetResponse)
    assert before.advanced is not None
    assert before.advanced.used == 0
    assert before.advanced.allocated >= 1

    pack = order_pack(client, zone)
    during = client.ssl.certificate_packs.quota.get(zone_id=zone["id"])
    assert during.advanced.used == 1
    assert during.advanced.allocated == before.advanced.allocated

    client.ssl.certificate_packs.delete(pack.id, zone_id=zone["id"])
    after = client.ssl.certificate_packs.quota.get(zone_id=zone["id"])
    assert after.advanced.used == 0


def test_list_auto_paginates_across_pages(server, client, order_pack):
    zone = server.create_zone()
    ordered = [
        order_pack(client, zone, extra_host=f"h{i}.{zone['name']}").id
        for i in range(12)
    ]

    pager = client.ssl.certificate_packs.list(zone_id=zone["id"], status="all", per_page=5)
    pages = list(pager.iter_pages())
    sizes = [len(page.result) for page in pages]
    # 12 packs by 5: three full-or-partial pages, then the empty page that stops the pager.
    assert sizes == [5, 5, 2, 0], sizes
    assert [page.result_info.page for page in pages] == [1, 2, 3, 4]
    assert all(page.result_info.per_page == 5 for page in pages)
    first_info = pages[0].result_info.model_extra or {}
    assert first_info.get("total_count") == 12 and first_info.get("total_pages") == 3, first_info

    seen = [pack.id for pack in client.ssl.certificate_packs.list(zone_id=zone["id"], status="all", per_page=5)]
    assert sorted(seen) == sorted(ordered)
    assert len(set(seen)) == 12, "no pack repeated across pages"
    for page in pages:
        for pack in page.result:
            assert isinstance(pack, CertificatePackListResponse)
            assert pack.status in PENDING


def test_list_default_shows_only_active_packs(server, client, order_pack):
    zone = server.create_zone()
    order_pack(client, zone)
    assert list(client.ssl.certificate_packs.list(zone_id=zone["id"])) == []
    assert len(list(client.ssl.certificate_packs.list(zone_id=zone["id"], status="all"))) == 1

    dev_active = list(client.ssl.certificate_packs.list(zone_id=DEV_ZONE_ID))
    assert DEV_PACK_ID in [pack.id for pack in dev_active]
    assert all(pack.status == "active" for pack in dev_active)
