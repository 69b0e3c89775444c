"""Starts one fresh zonecert server (dev seed, temp data dir, port 0) for the Python compat suite.

The server binary comes from ZONECERT_BIN (set by scripts/compat.sh) or target/debug/zonecert.
Tests drive it only through the official `cloudflare` SDK, with strict response validation, and
set up zones, tokens and users through the server's own admin CLI, as an operator would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from cloudflare import Cloudflare

ROOT = Path(__file__).resolve().parents[3]
DEV_ZONE_ID = "023e105f4ecef8ad9ca31a8372d0c353"
DEV_ZONE_NAME = "example.com"
DEV_PACK_ID = "a77f8bd7-3b47-46b4-a6f1-75cf98109948"
DEV_EMAIL = "user@example.com"
DEV_GLOBAL_KEY = "144c9defac04969c7bfad8efaa8ea194"

# The SDKs read these when a credential is not passed; a stray one would change what a test sends.
for _name in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_API_KEY", "CLOUDFLARE_EMAIL", "CLOUDFLARE_BASE_URL",
              "CLOUDFLARE_API_USER_SERVICE_KEY", "CLOUDFLARE_CUSTOM_HEADERS"):
    os.environ.pop(_name, None)


def zonecert_bin() -> str:
    return os.environ.get("ZONECERT_BIN") or str(ROOT / "target" / "debug" / "zonecert")


@dataclass
class Server:
    base_url: str
    token: str
    data_dir: Path
    process: subprocess.Popen

    def admin(self, *args: str) -> dict:
        """Runs `zonecert ARGS --data-dir DIR --output json` and returns its JSON."""
        cmd = [zonecert_bin(), *args, "--data-dir", str(self.data_dir), "--output", "json"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{cmd} failed ({done.returncode}): {done.stderr}{done.stdout}"
        return json.loads(done.stdout)

    def create_zone(self, prefix: str = "compat") -> dict:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}.test"
        zone = self.admin("zone", "create", name)
        assert zone["name"] == name
        assert re.fullmatch(r"[0-9a-f]{32}", zone["id"]), zone
        return zone

    def create_token(self, *permissions: str, zones: tuple[str, ...] = ()) -> str:
        args = ["token", "create", "--name", f"compat-{uuid.uuid4().hex[:8]}"]
        for permission in permissions:
            args += ["--permission", permission]
        for zone in zones:
            args += ["--zone", zone]
        return self.admin(*args)["secret"]

    def create_user(self) -> tuple[str, str]:
        email = f"compat-{uuid.uuid4().hex[:8]}@example.net"
        user = self.admin("user", "create", email)
        assert user["email"] == email
        return email, user["key"]

    def client(self, **credentials) -> Cloudflare:
        """An official SDK client with strict schema validation and no retries (a retried
        error would hide which response the server gave first)."""
        if not credentials:
            credentials = {"api_token": self.token}
        return Cloudflare(
            base_url=self.base_url,
            max_retries=0,
            timeout=60,
            _strict_response_validation=True,
            **credentials,
        )


def _start(data_dir: Path, *extra_args: str) -> Server:
    binary = zonecert_bin()
    if not os.access(binary, os.X_OK):
        pytest.exit(f"zonecert binary not found at {binary}: run `cargo build -p zonecert`", returncode=2)
    # Output goes to files, not pipes: a server that keeps logging would block on a full pipe.
    stdout = open(data_dir / "server.stdout", "w+b")
    stderr = open(data_dir / "server.stderr", "w+b")
    (data_dir / "data").mkdir()
    process = subprocess.Popen(
        [binary, "serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir / "data"),
         "--rate-limit", "off", *extra_args],
        stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    base_url = token = None
    while time.monotonic() < deadline:
        text = (data_dir / "server.stdout").read_text(errors="replace")
        url_match = re.search(r"CLOUDFLARE_BASE_URL=[\"']?(http://127\.0\.0\.1:\d+/client/v4)", text)
        token_match = re.search(r"CLOUDFLARE_API_TOKEN=[\"']?([^\s\"']+)", text)
        if url_match and token_match and re.search(r"listening on http://127\.0\.0\.1:\d+", text):
            base_url, token = url_match.group(1), token_match.group(1)
            break
        if process.poll() is not None:
            break
        time.sleep(0.05)
    if base_url is None:
        process.kill()
        process.wait()
        raise RuntimeError(
            "zonecert serve did not print its address and token:\n"
            + (data_dir / "server.stdout").read_text(errors="replace")
            + (data_dir / "server.stderr").read_text(errors="replace")
        )
    return Server(base_url=base_url, token=token, data_dir=data_dir / "data", process=process)


@pytest.fixture(scope="session")
def server():
    tmp = Path(tempfile.mkdtemp(prefix="zonecert-compat-py-"))
    started = _start(tmp)
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


class TestDns:
    """The loopback DNS server and HTTP origin of `zonecert dev dns`, driven by line commands."""

    def __init__(self) -> None:
        binary = zonecert_bin()
        if not os.access(binary, os.X_OK):
            pytest.exit(f"zonecert not found at {binary}: run `cargo build -p zonecert`", returncode=2)
        self.process = subprocess.Popen([binary, "dev", "dns"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        first = self.process.stdout.readline()
        match = re.fullmatch(r"dns listening on (127\.0\.0\.1:\d+)\n", first)
        if not match:
            self.close()
            raise RuntimeError(f"zonecert dev dns printed {first!r}")
        self.addr = match.group(1)
        # The second line names its HTTP origin (for http validation walk-throughs).
        second = self.process.stdout.readline()
        http = re.fullmatch(r"http listening on (127\.0\.0\.1:\d+)\n", second)
        if not http:
            self.close()
            raise RuntimeError(f"zonecert dev dns printed {second!r}")
        self.http_addr = http.group(1)

    def command(self, *words: str) -> None:
        self.process.stdin.write(" ".join(words) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        assert answer == "ok\n", f"zonecert dev dns answered {answer!r} to {words}"

    def set_txt(self, name: str, *values: str) -> None:
        self.command("txt", name, *values)

    def close(self) -> None:
        # Closing stdin is how the helper is told to stop.
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def dns():
    started = TestDns()
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="module")
def lifecycle_server(dns: TestDns):
    """A server whose workers run DCV checks against the loopback DNS server only."""
    tmp = Path(tempfile.mkdtemp(prefix="zonecert-compat-py-lifecycle-"))
    started = _start(tmp, "--dcv-resolvers", dns.addr, "--poll-interval", "1")
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
def client(server: Server) -> Cloudflare:
    return server.client()


@pytest.fixture
def order_pack():
    """Orders an advanced pack for the zone apex plus one more host (the wildcard by default)."""

    def order(client: Cloudflare, zone: dict, *, extra_host: str | None = None, validation_method: str = "txt"):
        return client.ssl.certificate_packs.create(
            zone_id=zone["id"],
            type="advanced",
            hosts=[zone["name"], extra_host or f"*.{zone['name']}"],
            validation_method=validation_method,
            validity_days=90,
            certificate_authority="lets_encrypt",
        )

    return order
