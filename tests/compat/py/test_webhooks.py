"""Webhook deliveries from a real zonecert server, verified with the Standard Webhooks
reference library from PyPI (`standardwebhooks`, pinned in requirements.txt): a receiver on
loopback gets `zonecert webhook test` and a txt pack's events from order to active, and each
verifies with `Webhook(secret).verify(body, headers)`; a changed body or another secret does
not. The server's CAA lookups go to the loopback DNS server of `zonecert dev dns`."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from conftest import DEV_ZONE_ID, _start


class Receiver:
    """An HTTP server on 127.0.0.1:0 keeping every POST's headers and body, answering 204."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hooks/zonecert"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def messages(self) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return list(self.received)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture(scope="module")
def webhook_server(dns):
    tmp = Path(tempfile.mkdtemp(prefix="zonecert-compat-py-webhooks-"))
    started = _start(tmp, "--dcv-resolvers", dns.addr, "--dcv-auto-validate", "--poll-interval", "1")
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


@pytest.fixture
def receiver():
    started = Receiver()
    try:
        yield started
    finally:
        started.close()


def wait_for(receiver: Receiver, count: int, pick, timeout: float = 60) -> list[tuple[dict[str, str], bytes]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in receiver.messages() if pick(json.loads(m[1]))]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_deliveries_verify_with_the_standardwebhooks_library(webhook_server, receiver):
    added = webhook_server.admin("webhook", "add", receiver.url, "--allow-private")
    secret = added["secret"]
    assert secret.startswith("whsec_")
    hook = Webhook(secret)

    # `zonecert webhook test` sends a signed webhook.test at once.
    tested = webhook_server.admin("webhook", "test", added["id"])
    assert tested["delivered"] is True, tested
    [(headers, body)] = wait_for(receiver, 1, lambda e: e["type"] == "webhook.test")
    event = hook.verify(body, headers)
    assert event["data"]["endpoint_id"] == added["id"]
    assert headers["webhook-id"] == tested["id"]

    # A txt pack from order to active: auto-validation passes its checks.
    client = webhook_server.client()
    pack = client.ssl.certificate_packs.create(
        zone_id=DEV_ZONE_ID, type="advanced", hosts=["example.com", "www.example.com"],
        validation_method="txt", validity_days=90, certificate_authority="lets_encrypt",
    )
    ours = lambda e: e["type"].startswith("pack.") and e["data"]["pack"]["id"] == pack.id  # noqa: E731
    deliveries = wait_for(receiver, 3, ours)
    verified = [hook.verify(body, headers) for headers, body in deliveries]
    assert [e["type"] for e in verified] == ["pack.validated", "pack.issued", "pack.active"], verified
    for (headers, body), event in zip(deliveries, verified):
        assert event == json.loads(body)
        assert event["data"]["zone_id"] == DEV_ZONE_ID
        assert event["data"]["pack"]["id"] == pack.id
        assert headers["content-type"] == "application/json"
    assert verified[-1]["data"]["pack"]["status"] == "active"
    assert verified[-1]["data"]["serial"] == verified[1]["data"]["serial"]
    assert len({headers["webhook-id"] for headers, _ in deliveries}) == 3

    # Forgeries do not verify: a changed body, another endpoint's secret, a replayed
    # message with an old timestamp.
    headers, body = deliveries[-1]
    with pytest.raises(WebhookVerificationError):
        hook.verify(body.replace(b'"active"', b'"expired"'), headers)
    other = webhook_server.admin("webhook", "add", receiver.url, "--allow-private", "--events", "pack.deleted")
    with pytest.raises(WebhookVerificationError):
        Webhook(other["secret"]).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        hook.verify(body, {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 3600)})
    for endpoint in (added, other):
        webhook_server.admin("webhook", "remove", endpoint["id"])
