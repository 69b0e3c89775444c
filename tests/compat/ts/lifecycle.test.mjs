// The certificate lifecycle through the official TypeScript SDK: a txt pack is ordered, checked
// against a loopback DNS server and fails with a reason, the records are created, and the pack
// turns active with its certificate.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, startTestDns, orderPack } from './zonecert-server.mjs';

let dns;
let server;
before(async () => {
  dns = await startTestDns();
  // The workers check against the loopback DNS server only, never the system's resolvers.
  server = await startServer(['--dcv-resolvers', dns.addr, '--poll-interval', '1']);
});
after(async () => {
  await server?.stop();
  await dns?.stop();
});

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

async function itemsOf(client, zoneId, packId) {
  const items = await client.ssl.verification.get({ zone_id: zoneId, retry: true });
  return items.filter((v) => v.cert_pack_uuid === packId);
}

test('a txt pack turns active once its records exist', async () => {
  const client = server.client();
  const zone = await server.createZone('lifecycle');
  const hosts = [zone.name, `www.${zone.name}`];
  const pack = await orderPack(client, zone, { extraHost: hosts[1] });

  // retry=true waits for the check it asks for: no record yet, and it says why.
  let mine = await itemsOf(client, zone.id, pack.id);
  assert.deepEqual(mine.map((v) => v.hostname).sort(), [...hosts].sort());
  const records = new Map();
  for (const item of mine) {
    assert.equal(item.certificate_status, 'authorizing', JSON.stringify(item));
    assert.equal(item.verification_status, false, JSON.stringify(item));
    assert.match(item.verification_error, /^no TXT record at _acme-challenge\./);
    records.set(item.verification_info.txt_name, item.verification_info.txt_value);
  }
  assert.deepEqual([...records.keys()].sort(), hosts.map((h) => `_acme-challenge.${h}`).sort());

  for (const [name, value] of records) await dns.setTxt(name, value);

  const deadline = Date.now() + 10_000;
  for (;;) {
    mine = await itemsOf(client, zone.id, pack.id);
    if (mine.length > 0 && mine.every((v) => v.certificate_status === 'active')) break;
    assert.ok(Date.now() < deadline, `not active within 10 s: ${JSON.stringify(mine)}`);
    await sleep(200);
  }
  assert.ok(mine.every((v) => v.verification_status === true), JSON.stringify(mine));

  const got = await client.ssl.certificatePacks.get(pack.id, { zone_id: zone.id });
  assert.equal(got.status, 'active');
  assert.equal(got.certificates.length, 1, JSON.stringify(got));
  assert.deepEqual([...got.certificates[0].hosts].sort(), [...hosts].sort());
  assert.equal(got.certificates[0].status, 'active');
});
