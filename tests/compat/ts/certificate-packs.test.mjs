// ssl.certificatePacks create / list / get / edit / delete / quota through the official
// TypeScript SDK.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Cloudflare from 'cloudflare';
import { startServer, orderPack, DEV_ZONE_ID, DEV_ZONE_NAME, DEV_PACK_ID } from './zonecert-server.mjs';

const PENDING = ['initializing', 'pending_validation'];

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

test('create, get, edit, delete', async () => {
  const requests = [];
  const client = server.client({ apiToken: server.token }, requests);
  const zone = await server.createZone();

  const created = await orderPack(client, zone);
  assert.equal(requests.at(-1).url.pathname, `/client/v4/zones/${zone.id}/ssl/certificate_packs/order`);
  assert.deepEqual(JSON.parse(requests.at(-1).body), {
    type: 'advanced',
    hosts: [zone.name, `*.${zone.name}`],
    validation_method: 'txt',
    validity_days: 90,
    certificate_authority: 'lets_encrypt',
  });
  assert.equal(created.type, 'advanced');
  assert.deepEqual(created.hosts, [zone.name, `*.${zone.name}`]);
  assert.ok(PENDING.includes(created.status), created.status);
  assert.equal(created.validation_method, 'txt');
  assert.equal(created.validity_days, 90);
  assert.equal(created.certificate_authority, 'lets_encrypt');
  assert.deepEqual(created.certificates, []);

  const got = await client.ssl.certificatePacks.get(created.id, { zone_id: zone.id });
  assert.equal(got.id, created.id);
  assert.deepEqual(got.hosts, created.hosts);

  const edited = await client.ssl.certificatePacks.edit(created.id, {
    zone_id: zone.id,
    cloudflare_branding: true,
  });
  assert.deepEqual(JSON.parse(requests.at(-1).body), { cloudflare_branding: true });
  assert.equal(requests.at(-1).method, 'PATCH');
  assert.equal(edited.id, created.id);
  assert.equal(edited.cloudflare_branding, true);

  const deleted = await client.ssl.certificatePacks.delete(created.id, { zone_id: zone.id });
  assert.equal(requests.at(-1).method, 'DELETE');
  assert.equal(requests.at(-1).body, undefined);
  assert.deepEqual(deleted, { id: created.id });
  await assert.rejects(client.ssl.certificatePacks.get(created.id, { zone_id: zone.id }), (error) => {
    assert.ok(error instanceof Cloudflare.NotFoundError, String(error));
    assert.equal(error.errors[0].code, 7003);
    return true;
  });
});

test('get the dev pack', async () => {
  const pack = await server.client().ssl.certificatePacks.get(DEV_PACK_ID, { zone_id: DEV_ZONE_ID });
  assert.equal(pack.id, DEV_PACK_ID);
  assert.equal(pack.type, 'advanced');
  assert.ok(pack.hosts.includes(DEV_ZONE_NAME));
  for (const certificate of pack.certificates) {
    assert.ok(!Number.isNaN(Date.parse(certificate.expires_on)), certificate.expires_on);
  }
});

for (const [label, hosts, validityDays] of [
  ['a host outside the zone', ['elsewhere.invalid'], 90],
  ['a validity the endpoint does not offer', null, 7],
]) {
  test(`an order with ${label} is a bad request`, async () => {
    const client = server.client();
    const zone = await server.createZone();
    await assert.rejects(
      client.ssl.certificatePacks.create({
        zone_id: zone.id,
        type: 'advanced',
        hosts: hosts ?? [zone.name],
        validation_method: 'txt',
        validity_days: validityDays,
        certificate_authority: 'lets_encrypt',
      }),
      (error) => {
        assert.ok(error instanceof Cloudflare.BadRequestError, `${error?.constructor?.name}: ${error}`);
        assert.ok(error.errors[0]?.code >= 1000);
        return true;
      },
    );
    assert.equal((await client.ssl.certificatePacks.quota.get({ zone_id: zone.id })).advanced.used, 0);
  });
}

test('quota counts orders and deletions', async () => {
  const client = server.client();
  const zone = await server.createZone();
  const before = await client.ssl.certificatePacks.quota.get({ zone_id: zone.id });
  assert.equal(before.advanced.used, 0);
  assert.ok(before.advanced.allocated >= 1);
  const pack = await orderPack(client, zone);
  const during = await client.ssl.certificatePacks.quota.get({ zone_id: zone.id });
  assert.deepEqual(during.advanced, { allocated: before.advanced.allocated, used: 1 });
  await client.ssl.certificatePacks.delete(pack.id, { zone_id: zone.id });
  const after = await client.ssl.certificatePacks.quota.get({ zone_id: zone.id });
  assert.equal(after.advanced.used, 0);
});

test('list auto-paginates across several pages', async () => {
  const requests = [];
  const client = server.client({ apiToken: server.token }, requests);
  const zone = await server.createZone();
  const ordered = [];
  for (let i = 0; i < 12; i++) {
    ordered.push((await orderPack(client, zone, { extraHost: `h${i}.${zone.name}` })).id);
  }

  requests.length = 0;
  const seen = [];
  for await (const pack of client.ssl.certificatePacks.list({ zone_id: zone.id, status: 'all', per_page: 5 })) {
    assert.ok(PENDING.includes(pack.status), pack.status);
    seen.push(pack.id);
  }
  assert.deepEqual([...seen].sort(), [...ordered].sort());
  assert.equal(new Set(seen).size, 12, 'no pack repeated across pages');
  // The TypeScript pager asks for page+1 until a page comes back empty.
  assert.deepEqual(
    requests.map((r) => r.url.searchParams.get('page')),
    [null, '2', '3', '4'],
  );
  for (const request of requests) {
    assert.equal(request.url.pathname, `/client/v4/zones/${zone.id}/ssl/certificate_packs`);
    assert.equal(request.url.searchParams.get('per_page'), '5');
    assert.equal(request.url.searchParams.get('status'), 'all');
  }

  const first = await client.ssl.certificatePacks.list({ zone_id: zone.id, status: 'all', per_page: 5 });
  assert.equal(first.result.length, 5);
  assert.equal(first.result_info.page, 1);
  assert.equal(first.result_info.per_page, 5);
  assert.equal(first.result_info.count, 5);
  assert.equal(first.result_info.total_count, 12);
  assert.equal(first.result_info.total_pages, 3);
  const sizes = [];
  for await (const page of first.iterPages()) sizes.push(page.result.length);
  assert.deepEqual(sizes, [5, 5, 2, 0]);
});

test('list without status=all shows only active packs', async () => {
  const client = server.client();
  const zone = await server.createZone();
  await orderPack(client, zone);
  const active = [];
  for await (const pack of client.ssl.certificatePacks.list({ zone_id: zone.id })) active.push(pack);
  assert.deepEqual(active, []);
  const all = [];
  for await (const pack of client.ssl.certificatePacks.list({ zone_id: zone.id, status: 'all' })) all.push(pack);
  assert.equal(all.length, 1);

  const devDefault = [];
  for await (const pack of client.ssl.certificatePacks.list({ zone_id: DEV_ZONE_ID })) devDefault.push(pack);
  assert.ok(devDefault.every((pack) => pack.status === 'active'));
  const devAll = [];
  for await (const pack of client.ssl.certificatePacks.list({ zone_id: DEV_ZONE_ID, status: 'all' })) devAll.push(pack);
  const dev = devAll.find((pack) => pack.id === DEV_PACK_ID);
  assert.ok(dev, JSON.stringify(devAll));
  assert.equal(devDefault.some((pack) => pack.id === DEV_PACK_ID), dev.status === 'active');
});
