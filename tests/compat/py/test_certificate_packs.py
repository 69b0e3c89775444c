"""`ssl.certificate_packs` create / list / get / edit / delete / quota through the official
Python SDK, strict schema validation on."""

from __future__ import annotations

import pytest
from cloudflare import BadRequestError, NotFoundError
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
    assert pack.type == "advanced"
    assert DEV_ZONE_NAME in pack.hosts
    for certificate in pack.certificates:
        assert set(certificate.hosts) <= set(pack.hosts)


@pytest.mark.parametrize("hosts, validity_days", [
    (["elsewhere.invalid"], 90),  # not in the zone, and no zone apex
    (None, 7),  # 7 days is a validity the order endpoint does not offer
])
def test_invalid_order_is_bad_request(server, client, hosts, validity_days):
    zone = server.create_zone()
    with pytest.raises(BadRequestError) as raised:
        client.ssl.certificate_packs.create(
            zone_id=zone["id"], type="advanced", hosts=hosts or [zone["name"]], validation_method="txt",
            validity_days=validity_days, certificate_authority="lets_encrypt",
        )
    assert raised.value.status_code == 400
    assert raised.value.errors[0].code >= 1000
    assert client.ssl.certificate_packs.quota.get(zone_id=zone["id"]).advanced.used == 0


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

    assert all(pack.status == "active" for pack in client.ssl.certificate_packs.list(zone_id=DEV_ZONE_ID))
    dev = client.ssl.certificate_packs.get(DEV_PACK_ID, zone_id=DEV_ZONE_ID)
    dev_all = [pack.id for pack in client.ssl.certificate_packs.list(zone_id=DEV_ZONE_ID, status="all")]
    assert DEV_PACK_ID in dev_all
    dev_default = [pack.id for pack in client.ssl.certificate_packs.list(zone_id=DEV_ZONE_ID)]
    assert (DEV_PACK_ID in dev_default) == (dev.status == "active")
