"""ACME issuance through the official Python SDK (strict schema validation on): a server with
`--acme lets_encrypt=<Pebble>` (Let's Encrypt's test CA, run by `zonecert dev pebble` on
loopback, asking `zonecert dev dns` for its validations) orders a txt pack of a zone's apex and
its wildcard; the CA's records are created in the loopback DNS, the pack turns active, and the
deployed chain verifies against Pebble's root with the hosts as its names."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from cloudflare.types.ssl import Verification

from conftest import _start, zonecert_bin


class DevPebble:
    """`zonecert dev pebble`: Pebble on loopback until its input closes."""

    def __init__(self, dns_addr: str) -> None:
        if shutil.which("pebble") is None:
            pytest.fail("pebble is not installed (Debian: apt-get install pebble; scripts/test.sh does)")
        self.process = subprocess.Popen([zonecert_bin(), "dev", "pebble", "--dns", dns_addr],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        fields = {}
        for _ in range(3):
            line = self.process.stdout.readline()
            match = re.fullmatch(r"(acme directory|tls root|management) (\S+)\n", line)
            if not match:
                self.close()
                raise RuntimeError(f"zonecert dev pebble printed {line!r}")
            fields[match.group(1)] = match.group(2)
        self.directory = fields["acme directory"]
        self.tls_root = fields["tls root"]
        self.management = fields["management"]

    def issuing_root(self) -> str:
        """The root Pebble issues under, from its management API (over its own TLS root)."""
        context = ssl.create_default_context(cafile=self.tls_root)
        with urllib.request.urlopen(f"{self.management}/roots/0", context=context, timeout=30) as answer:
            return answer.read().decode()

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def pebble(dns):
    started = DevPebble(dns.addr)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="module")
def acme_server(dns, pebble: DevPebble):
    tmp = Path(tempfile.mkdtemp(prefix="zonecert-compat-py-acme-"))
    started = _start(tmp, "--dcv-resolvers", dns.addr, "--poll-interval", "1",
                     "--acme", f"lets_encrypt={pebble.directory}",
                     "--acme-root", f"lets_encrypt={pebble.tls_root}")
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


def items_of(client, zone_id: str, pack_id: str, *, retry: bool) -> list[Verification]:
    # The server accepts only retry=true; without it the view is read as it is.
    items = client.ssl.verification.get(zone_id=zone_id, retry=True) if retry else \
        client.ssl.verification.get(zone_id=zone_id)
    for item in items:
        assert isinstance(item, Verification)
    return [v for v in items if v.cert_pack_uuid == pack_id]


def test_a_txt_pack_with_its_wildcard_is_issued_by_the_acme_ca(acme_server, dns, pebble, tmp_path):
    client = acme_server.client()
    zone = acme_server.create_zone("acme")
    hosts = [zone["name"], f"*.{zone['name']}"]
    pack = client.ssl.certificate_packs.create(
        zone_id=zone["id"],
        type="advanced",
        hosts=hosts,
        validation_method="txt",
        validity_days=90,
        certificate_authority="lets_encrypt",
    )
    assert pack.status == "initializing", pack

    # The worker places the order; then the items carry the CA's records.
    deadline = time.monotonic() + 30
    while True:
        mine = items_of(client, zone["id"], pack.id, retry=False)
        infos = [(item.verification_info.model_extra or {}) if item.verification_info else {} for item in mine]
        if len(mine) == 2 and all("txt_value" in info for info in infos):
            break
        assert time.monotonic() < deadline, f"no records from the CA within 30 s: {mine}"
        time.sleep(0.2)
    names = {info["txt_name"] for info in infos}
    assert names == {f"_acme-challenge.{zone['name']}"}, infos
    values = [info["txt_value"] for info in infos]
    assert len(set(values)) == 2, "the apex and its wildcard have one token each"
    dns.set_txt(names.pop(), *values)

    deadline = time.monotonic() + 60
    while True:
        mine = items_of(client, zone["id"], pack.id, retry=True)
        if mine and all(v.certificate_status == "active" for v in mine):
            break
        assert time.monotonic() < deadline, f"not active within 60 s: {mine}"
        time.sleep(0.5)

    got = client.ssl.certificate_packs.get(pack.id, zone_id=zone["id"])
    assert got.status == "active", got
    assert sorted(got.certificates[0].hosts) == sorted(hosts), got

    chain = acme_server.data_dir / "certs" / pack.id / "fullchain.pem"
    root = tmp_path / "pebble-root.pem"
    root.write_text(pebble.issuing_root())
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(root), "-untrusted", str(chain), str(chain)],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    sans = subprocess.run(["openssl", "x509", "-in", str(chain), "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True, check=True).stdout
    assert sorted(re.findall(r"DNS:([^,\s]+)", sans)) == sorted(hosts), sans
