// ssl.verification.get / .edit through the official TypeScript SDK.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Cloudflare from 'cloudflare';
import {
  startServer,
  orderPack,
  DEV_ZONE_ID,
  DEV_ZONE_NAME,
  DEV_PACK_ID,
  DEV_EMAIL,
  DEV_GLOBAL_KEY,
} from './zonecert-server.mjs';

const CERTIFICATE_STATUSES = new Set([
  'initializing',
  'authorizing',
  'active',
  'expired',
  'issuing',
  'timing_out',
  'pending_deployment',
]);

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

function assertDevZoneVerifications(verifications) {
  assert.ok(Array.isArray(verifications), `expected an array, got ${JSON.stringify(verifications)}`);
  assert.ok(verifications.length > 0, 'the dev zone has a pack, so its verification list is not empty');
  for (const item of verifications) {
    assert.ok(CERTIFICATE_STATUSES.has(item.certificate_status), JSON.stringify(item));
  }
  const dev = verifications.filter((v) => v.cert_pack_uuid === DEV_PACK_ID);
  assert.ok(dev.length > 0, `no item for the dev pack: ${JSON.stringify(verifications)}`);
  // One item per host of the pack; the host rides along as an extra key.
  assert.ok(dev.some((v) => v.hostname === DEV_ZONE_NAME), JSON.stringify(dev));
}

test('get with an API token', async () => {
  const requests = [];
  const client = server.client({ apiToken: server.token }, requests);
  assertDevZoneVerifications(await client.ssl.verification.get({ zone_id: DEV_ZONE_ID }));
  assert.equal(requests.length, 1);
  const [request] = requests;
  assert.equal(request.method, 'GET');
  assert.equal(request.url.pathname, `/client/v4/zones/${DEV_ZONE_ID}/ssl/verification`);
  assert.equal(request.url.search, '');
  assert.equal(request.headers.get('authorization'), `Bearer ${server.token}`);
  assert.match(request.headers.get('api-version'), /^\d{4}-\d{2}-\d{2}$/);
  assert.equal(request.headers.get('x-stainless-lang'), 'js');
});

test('get with email and global key', async () => {
  const requests = [];
  const client = server.client({ apiEmail: DEV_EMAIL, apiKey: DEV_GLOBAL_KEY }, requests);
  assertDevZoneVerifications(await client.ssl.verification.get({ zone_id: DEV_ZONE_ID }));
  assert.equal(requests[0].headers.get('x-auth-email'), DEV_EMAIL);
  assert.equal(requests[0].headers.get('x-auth-key'), DEV_GLOBAL_KEY);
  assert.equal(requests[0].headers.get('authorization'), null);
});

for (const [auth, credentials] of [
  ['token', () => ({ apiToken: server.token })],
  ['email+key', () => ({ apiEmail: DEV_EMAIL, apiKey: DEV_GLOBAL_KEY })],
]) {
  test(`get with retry (${auth})`, async () => {
    const requests = [];
    const client = server.client(credentials(), requests);
    assertDevZoneVerifications(await client.ssl.verification.get({ zone_id: DEV_ZONE_ID, retry: true }));
    assert.equal(requests[0].url.searchParams.get('retry'), 'true');
  });
}

test('the seed example works unchanged but for the environment', async () => {
  // What the seed page does: a client built from the environment alone.
  process.env.CLOUDFLARE_BASE_URL = server.baseURL;
  process.env.CLOUDFLARE_API_TOKEN = server.token;
  try {
    const client = new Cloudflare({ apiToken: process.env['CLOUDFLARE_API_TOKEN'] });
    const verifications = await client.ssl.verification.get({ zone_id: DEV_ZONE_ID });
    assertDevZoneVerifications(verifications);
  } finally {
    delete process.env.CLOUDFLARE_BASE_URL;
    delete process.env.CLOUDFLARE_API_TOKEN;
  }
});

test('a pending pack shows one item per host with the record to publish', async () => {
  const client = server.client();
  const zone = await server.createZone();
  const pack = await orderPack(client, zone);
  const mine = (await client.ssl.verification.get({ zone_id: zone.id })).filter(
    (v) => v.cert_pack_uuid === pack.id,
  );
  assert.ok(mine.length > 0);
  for (const item of mine) {
    assert.ok(['initializing', 'authorizing'].includes(item.certificate_status), JSON.stringify(item));
    assert.equal(item.validation_method, 'txt');
    assert.equal(item.verification_type, 'cname');
    assert.notEqual(item.verification_status, true);
  }
  const info = mine.find((v) => v.verification_info)?.verification_info;
  assert.ok(info, JSON.stringify(mine));
  assert.equal(info.record_name, 'txt_name');
  assert.equal(info.record_target, 'txt_value');
  assert.match(info.txt_name, /^_acme-challenge\./);
  assert.ok(info.txt_value);
});

test('edit switches the validation method and rechecks', async () => {
  const requests = [];
  const client = server.client({ apiToken: server.token }, requests);
  const zone = await server.createZone();
  // No wildcard: http validation can never prove control of a wildcard (CA/B Forum SC45).
  const pack = await orderPack(client, zone, { extraHost: `www.${zone.name}` });

  requests.length = 0;
  const switched = await client.ssl.verification.edit(pack.id, {
    zone_id: zone.id,
    validation_method: 'http',
  });
  assert.equal(switched.validation_method, 'http');
  assert.equal(typeof switched.status, 'string');
  assert.equal(requests[0].method, 'PATCH');
  assert.equal(requests[0].url.pathname, `/client/v4/zones/${zone.id}/ssl/verification/${pack.id}`);
  assert.deepEqual(JSON.parse(requests[0].body), { validation_method: 'http' });
  assert.equal(requests[0].headers.get('content-type'), 'application/json');

  const items = (await client.ssl.verification.get({ zone_id: zone.id })).filter(
    (v) => v.cert_pack_uuid === pack.id,
  );
  assert.ok(items.length > 0);
  assert.ok(items.every((v) => v.validation_method === 'http' && v.verification_type === 'meta tag'));

  const again = await client.ssl.verification.edit(pack.id, { zone_id: zone.id, validation_method: 'http' });
  assert.equal(again.validation_method, 'http');
});

test('edit to cname is reflected in the verification view', async () => {
  const client = server.client();
  const zone = await server.createZone();
  const pack = await orderPack(client, zone, { extraHost: `www.${zone.name}` });
  const switched = await client.ssl.verification.edit(pack.id, { zone_id: zone.id, validation_method: 'cname' });
  assert.equal(switched.validation_method, 'cname');
  const items = (await client.ssl.verification.get({ zone_id: zone.id })).filter(
    (v) => v.cert_pack_uuid === pack.id,
  );
  assert.ok(items.length > 0 && items.every((v) => v.validation_method === 'cname'), JSON.stringify(items));
});

test('edit with an unknown method is a bad request', async () => {
  const client = server.client();
  const zone = await server.createZone();
  const pack = await orderPack(client, zone);
  await assert.rejects(
    client.ssl.verification.edit(pack.id, { zone_id: zone.id, validation_method: 'carrier-pigeon' }),
    (error) => {
      assert.ok(error instanceof Cloudflare.BadRequestError, `${error?.constructor?.name}: ${error}`);
      assert.equal(error.status, 400);
      assert.ok(error.errors[0]?.code >= 1000);
      return true;
    },
  );
});
