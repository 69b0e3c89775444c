// The error classes the official TypeScript SDK raises for what the server answers: missing, bad
// and insufficient credentials, and unknown ids. The SDK maps 400 -> BadRequestError,
// 401 -> AuthenticationError, 403 -> PermissionDeniedError, 404 -> NotFoundError.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import Cloudflare from 'cloudflare';
import { startServer, orderPack, DEV_ZONE_ID, DEV_PACK_ID, DEV_EMAIL } from './zonecert-server.mjs';

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

/** Asserts that `promise` rejects with an instance of `ErrorClass`, `status` and a first code in `codes`. */
async function rejectsWith(promise, ErrorClass, status, codes, label = '') {
  await assert.rejects(promise, (error) => {
    assert.ok(
      error instanceof ErrorClass,
      `${label}: expected ${ErrorClass.name}, got ${error?.constructor?.name}: ${error}`,
    );
    assert.equal(error.status, status, label);
    assert.ok(codes.includes(error.errors[0]?.code), `${label}: codes ${JSON.stringify(error.errors)}`);
    return true;
  });
}

test('missing credentials: the request goes out bare and the server answers 400 9106', async () => {
  const requests = [];
  // With no credential at all the TypeScript SDK still sends the request (it counts the unset
  // X-Auth-Email / X-Auth-Key defaults as explicitly omitted headers).
  const client = server.client({ apiToken: null, apiKey: null, apiEmail: null }, requests);
  await rejectsWith(client.ssl.verification.get({ zone_id: DEV_ZONE_ID }), Cloudflare.BadRequestError, 400, [9106]);
  assert.equal(requests.length, 1);
  for (const header of ['authorization', 'x-auth-key', 'x-auth-email']) {
    assert.equal(requests[0].headers.get(header), null, header);
  }
});

test('unknown token is permission denied', async () => {
  const client = server.client({ apiToken: 'Xy'.repeat(20) });
  await rejectsWith(client.ssl.verification.get({ zone_id: DEV_ZONE_ID }), Cloudflare.PermissionDeniedError, 403, [10000]);
});

test('wrong global key is permission denied', async () => {
  const client = server.client({ apiEmail: DEV_EMAIL, apiKey: '0'.repeat(37) });
  await rejectsWith(
    client.ssl.certificatePacks.quota.get({ zone_id: DEV_ZONE_ID }),
    Cloudflare.PermissionDeniedError,
    403,
    [10000, 9103],
  );
});

test('malformed Authorization is a bad request', async () => {
  const client = server.client({ apiToken: 'not a token' });
  await rejectsWith(client.ssl.verification.get({ zone_id: DEV_ZONE_ID }), Cloudflare.BadRequestError, 400, [6003]);
});

test('malformed global key is a bad request', async () => {
  const client = server.client({ apiEmail: DEV_EMAIL, apiKey: 'not-a-hex-key' });
  await rejectsWith(client.ssl.verification.get({ zone_id: DEV_ZONE_ID }), Cloudflare.BadRequestError, 400, [6003]);
});

test('read-only token reads but cannot write', async () => {
  const writer = server.client();
  const zone = await server.createZone();
  const pack = await orderPack(writer, zone);
  const reader = server.client({ apiToken: await server.createToken(['SSL and Certificates Read']) });

  const verifications = await reader.ssl.verification.get({ zone_id: zone.id });
  assert.ok(verifications.some((v) => v.cert_pack_uuid === pack.id));
  assert.equal((await reader.ssl.certificatePacks.get(pack.id, { zone_id: zone.id })).id, pack.id);
  assert.equal((await reader.ssl.certificatePacks.quota.get({ zone_id: zone.id })).advanced.used, 1);

  const writes = {
    order: () => orderPack(reader, zone, { extraHost: `w.${zone.name}` }),
    'edit pack': () => reader.ssl.certificatePacks.edit(pack.id, { zone_id: zone.id, cloudflare_branding: true }),
    'delete pack': () => reader.ssl.certificatePacks.delete(pack.id, { zone_id: zone.id }),
    'edit verification': () =>
      reader.ssl.verification.edit(pack.id, { zone_id: zone.id, validation_method: 'txt' }),
  };
  for (const [label, write] of Object.entries(writes)) {
    await rejectsWith(write(), Cloudflare.PermissionDeniedError, 403, [9109, 10000], label);
  }
  assert.equal((await writer.ssl.certificatePacks.quota.get({ zone_id: zone.id })).advanced.used, 1);
});

test('zone-scoped token cannot read other zones', async () => {
  const mine = await server.createZone();
  const scoped = server.client({
    apiToken: await server.createToken(['SSL and Certificates Read'], [mine.id]),
  });
  assert.deepEqual(await scoped.ssl.verification.get({ zone_id: mine.id }), []);
  await rejectsWith(
    scoped.ssl.verification.get({ zone_id: DEV_ZONE_ID }),
    Cloudflare.PermissionDeniedError,
    403,
    [9109, 10000],
  );
});

test('unknown zone is not found', async () => {
  const client = server.client();
  const zoneId = randomUUID().replaceAll('-', '');
  const calls = {
    verification: () => client.ssl.verification.get({ zone_id: zoneId }),
    list: () => client.ssl.certificatePacks.list({ zone_id: zoneId }),
    quota: () => client.ssl.certificatePacks.quota.get({ zone_id: zoneId }),
  };
  for (const [label, call] of Object.entries(calls)) {
    await rejectsWith(call(), Cloudflare.NotFoundError, 404, [7003], label);
  }
});

test('unknown pack is not found', async () => {
  const client = server.client();
  const packId = randomUUID();
  const calls = {
    get: () => client.ssl.certificatePacks.get(packId, { zone_id: DEV_ZONE_ID }),
    edit: () => client.ssl.certificatePacks.edit(packId, { zone_id: DEV_ZONE_ID, cloudflare_branding: true }),
    delete: () => client.ssl.certificatePacks.delete(packId, { zone_id: DEV_ZONE_ID }),
    'edit verification': () =>
      client.ssl.verification.edit(packId, { zone_id: DEV_ZONE_ID, validation_method: 'txt' }),
    'malformed id': () => client.ssl.certificatePacks.get('not-a-pack-id', { zone_id: DEV_ZONE_ID }),
  };
  for (const [label, call] of Object.entries(calls)) {
    await rejectsWith(call(), Cloudflare.NotFoundError, 404, [7003], label);
  }
});
