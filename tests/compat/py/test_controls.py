"""The test controls (`zonecert dev reset|clock|auto-validate|faults`) with the official Python
SDK (strict schema validation on) against a real server: each test starts from `dev reset`, as a
user's suite would. The server's CAA lookups go to the loopback DNS server of `zonecert dev dns`
(which holds no record: no CAA, and no DCV record unless auto-validation or a test says so)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import DEV_PACK_ID, DEV_ZONE_ID, _start, zonecert_bin


@pytest.fixture(scope="module")
def controls_server(dns):
    tmp = Path(tempfile.mkdtemp(prefix="zonecert-compat-py-controls-"))
    started = _start(tmp, "--dcv-resolvers", dns.addr)
    try:
        yield started
    finally:
        started.process.terminate()
        try:
            started.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            started.process.kill()
            started.process.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def dev(server, *args: str) -> dict | list:
    """`zonecert dev ARGS --json` against the server, on the environment a suite sets."""
    env = dict(os.environ, CLOUDFLARE_BASE_URL=server.base_url, CLOUDFLARE_API_TOKEN=server.token)
    done = subprocess.run([zonecert_bin(), "dev", *args, "--json"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0, f"dev {args}: {done.stderr}{done.stdout}"
    return json.loads(done.stdout)


@pytest.fixture
def server(controls_server):
    """Every test starts from the documentation's seed state."""
    dev(controls_server, "reset")
    return controls_server


def order(client, *hosts: str) -> str:
    return client.ssl.certificate_packs.create(
        zone_id=DEV_ZONE_ID, type="advanced", hosts=list(hosts), validation_method="txt",
        validity_days=90, certificate_authority="lets_encrypt",
    ).id


def items(client, pack_id: str, *, retry: bool = False):
    # `retry` takes only `true` (the spec's enum): left out otherwise.
    found = client.ssl.verification.get(zone_id=DEV_ZONE_ID, retry=True) if retry \
        else client.ssl.verification.get(zone_id=DEV_ZONE_ID)
    return [v for v in found if v.cert_pack_uuid == pack_id]


def wait_for(client, pack_id: str, done):
    deadline = time.monotonic() + 30
    while True:
        pack = client.ssl.certificate_packs.get(pack_id, zone_id=DEV_ZONE_ID)
        if done(pack):
            return pack
        assert time.monotonic() < deadline, f"never got there: {pack}"
        time.sleep(0.05)


def test_order_with_auto_validation_is_active_in_one_retry_call(server):
    client = server.client()
    assert dev(server, "auto-validate", DEV_ZONE_ID, "on")["enabled"] is True
    pack_id = order(client, "example.com", "www.example.com")
    mine = items(client, pack_id, retry=True)
    assert len(mine) == 2
    for item in mine:
        assert item.certificate_status == "active", item
        assert (item.model_extra or {}).get("validated_automatically") is True, item


def test_advancing_into_the_renewal_window_renews_the_pack(server):
    client = server.client()
    dev(server, "auto-validate", DEV_ZONE_ID, "on")
    before = client.ssl.certificate_packs.get(DEV_PACK_ID, zone_id=DEV_ZONE_ID)
    serial = before.certificates[0].id
    clock = dev(server, "clock", "advance", "61d")
    assert clock["offset_seconds"] >= 61 * 86400
    after = wait_for(client, DEV_PACK_ID,
                     lambda p: p.status == "active" and p.certificates and p.certificates[0].id != serial)
    assert after.id == DEV_PACK_ID
    assert after.certificates[0].expires_on > before.certificates[0].expires_on


def test_a_failing_renewal_check_shows_its_reason_in_the_verification_view(server):
    # No record and no auto-validation: in the renewal window the check fails, and the
    # active pack's items say why and when the next check is (valid under the strict schema).
    client = server.client()
    assert all("next_check_on" not in (v.model_extra or {}) for v in items(client, DEV_PACK_ID))
    dev(server, "clock", "advance", "61d")
    deadline = time.monotonic() + 30
    while True:
        mine = items(client, DEV_PACK_ID)
        if mine and all(v.verification_status is False for v in mine):
            break
        assert time.monotonic() < deadline, f"no failed renewal check: {mine}"
        time.sleep(0.05)
    for item in mine:
        assert item.certificate_status == "active", item
        extra = item.model_extra or {}
        assert "TXT" in (item.verification_error or extra.get("verification_error") or ""), item
        assert extra.get("last_checked_on") and extra.get("next_check_on"), item


def test_advancing_past_expiry_without_records_expires_the_pack(server):
    client = server.client()
    dev(server, "clock", "advance", "91d")
    wait_for(client, DEV_PACK_ID, lambda p: p.status == "expired")
    assert all(v.certificate_status == "expired" for v in items(client, DEV_PACK_ID))


def test_a_pending_pack_past_its_validation_deadline_times_out(server):
    client = server.client()
    pack_id = order(client, "example.com")
    dev(server, "clock", "advance", "8d")
    wait_for(client, pack_id, lambda p: p.status == "validation_timed_out")
    assert [v.certificate_status for v in items(client, pack_id)] == ["timing_out"]


def test_an_injected_servfail_for_three_attempts_shows_its_reason_then_passes(server):
    client = server.client()
    dev(server, "auto-validate", DEV_ZONE_ID, "on")
    dev(server, "faults", "add", "servfail", "--host", "www.example.com", "--attempts", "3")
    pack_id = order(client, "example.com", "www.example.com")
    reason = "SERVFAIL looking up TXT for _acme-challenge.www.example.com (injected fault)"

    def www(retry: bool):
        return next(v for v in items(client, pack_id, retry=retry) if (v.model_extra or {}).get("hostname") == "www.example.com")

    # The order wakes the workers: their first check is the first attempt.
    deadline = time.monotonic() + 30
    while "verification_error" not in (www(False).model_extra or {}):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    def struck():
        return [f["struck"] for f in dev(server, "faults", "list")]

    for attempt in (1, 2, 3):
        if attempt > 1:
            # The next check on Cloudflare's schedule (about a minute later) is due now:
            # the clock's move wakes the workers, which run it.
            dev(server, "clock", "advance", "70s")
            deadline = time.monotonic() + 30
            while struck() != [attempt]:
                assert time.monotonic() < deadline, (attempt, struck())
                time.sleep(0.02)
        item = www(retry=False)
        assert item.certificate_status == "authorizing", (attempt, item)
        assert (item.model_extra or {}).get("verification_error") == reason, (attempt, item)
        assert struck() == [attempt]
    dev(server, "clock", "advance", "70s")
    assert all(v.certificate_status == "active" for v in items(client, pack_id, retry=True))
    assert [f["struck"] for f in dev(server, "faults", "list")] == [3]


def test_reset_brings_back_the_seed_state_and_the_token_still_works(server):
    client = server.client()
    zone = server.create_zone("controls")
    order(client, "example.com")
    dev(server, "clock", "advance", "10d")
    done = dev(server, "reset")
    assert done["zone_id"] == DEV_ZONE_ID and done["pack_id"] == DEV_PACK_ID
    # (The operator's view: the SDK's zone model wants more than the SSL API's zones carry.)
    assert [z["id"] for z in server.admin("zone", "list")] == [DEV_ZONE_ID]
    assert zone["id"] != DEV_ZONE_ID
    packs = list(client.ssl.certificate_packs.list(zone_id=DEV_ZONE_ID, status="all"))
    assert [p.id for p in packs] == [DEV_PACK_ID]
    assert packs[0].status == "active"
    assert dev(server, "clock", "show")["offset_seconds"] == 0
