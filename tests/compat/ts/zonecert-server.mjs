// Starts a fresh zonecert server (dev seed, temp data dir, port 0) for a TypeScript compat test
// file, and builds official SDK clients pointed at it. Zones, tokens and users are made with the
// server's own admin CLI, as an operator would.
import { spawn, execFile } from 'node:child_process';
import { mkdtemp, mkdir, readFile, rm } from 'node:fs/promises';
import { access, constants, openSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import Cloudflare from 'cloudflare';

export const DEV_ZONE_ID = '023e105f4ecef8ad9ca31a8372d0c353';
export const DEV_ZONE_NAME = 'example.com';
export const DEV_PACK_ID = 'a77f8bd7-3b47-46b4-a6f1-75cf98109948';
export const DEV_EMAIL = 'user@example.com';
export const DEV_GLOBAL_KEY = '144c9defac04969c7bfad8efaa8ea194';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const execFileAsync = promisify(execFile);

// The SDK reads these when a credential is not passed; a stray one would change what a test sends.
for (const name of [
  'CLOUDFLARE_API_TOKEN',
  'CLOUDFLARE_API_KEY',
  'CLOUDFLARE_EMAIL',
  'CLOUDFLARE_BASE_URL',
  'CLOUDFLARE_API_USER_SERVICE_KEY',
]) {
  delete process.env[name];
}

export function zonecertBin() {
  return process.env.ZONECERT_BIN || join(root, 'target', 'debug', 'zonecert');
}

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/** Starts `zonecert dev dns`: a loopback DNS server and HTTP origin driven by line commands. */
export async function startTestDns() {
  const bin = zonecertBin();
  await promisify(access)(bin, constants.X_OK).catch(() => {
    throw new Error(`zonecert not found at ${bin}: run \`cargo build -p zonecert\``);
  });
  const child = spawn(bin, ['dev', 'dns'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const dns = new TestDns(child);
  const first = await dns.nextLine();
  const match = /^dns listening on (127\.0\.0\.1:\d+)$/.exec(first ?? '');
  if (!match) {
    await dns.stop();
    throw new Error(`zonecert dev dns printed ${JSON.stringify(first)}`);
  }
  dns.addr = match[1];
  // The second line names its HTTP origin (for http validation walk-throughs).
  const second = await dns.nextLine();
  const http = /^http listening on (127\.0\.0\.1:\d+)$/.exec(second ?? '');
  if (!http) {
    await dns.stop();
    throw new Error(`zonecert dev dns printed ${JSON.stringify(second)}`);
  }
  dns.httpAddr = http[1];
  return dns;
}

export class TestDns {
  constructor(child) {
    this.child = child;
    this.lines = [];
    this.waiting = [];
    createInterface({ input: child.stdout }).on('line', (line) => {
      const waiter = this.waiting.shift();
      if (waiter) waiter(line);
      else this.lines.push(line);
    });
    child.on('exit', () => {
      for (const waiter of this.waiting.splice(0)) waiter(null);
    });
  }

  nextLine() {
    if (this.lines.length > 0) return Promise.resolve(this.lines.shift());
    if (this.child.exitCode !== null) return Promise.resolve(null);
    return new Promise((done) => this.waiting.push(done));
  }

  async command(...words) {
    this.child.stdin.write(`${words.join(' ')}\n`);
    const answer = await this.nextLine();
    if (answer !== 'ok') {
      throw new Error(`zonecert dev dns answered ${JSON.stringify(answer)} to ${words.join(' ')}`);
    }
  }

  setTxt(name, ...values) {
    return this.command('txt', name, ...values);
  }

  /** Closing stdin is how the helper is told to stop. */
  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const gone = new Promise((done) => this.child.once('exit', done));
      this.child.stdin.end();
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
      await gone;
      clearTimeout(timer);
    }
  }
}

export async function startServer(extraArgs = []) {
  const bin = zonecertBin();
  await promisify(access)(bin, constants.X_OK).catch(() => {
    throw new Error(`zonecert binary not found at ${bin}: run \`cargo build -p zonecert\``);
  });
  const tmp = await mkdtemp(join(tmpdir(), 'zonecert-compat-ts-'));
  const dataDir = join(tmp, 'data');
  await mkdir(dataDir);
  // Output goes to files, not pipes: a server that keeps logging would block on a full pipe.
  const stdoutPath = join(tmp, 'server.stdout');
  const stderrPath = join(tmp, 'server.stderr');
  const out = openSync(stdoutPath, 'w');
  const err = openSync(stderrPath, 'w');
  const child = spawn(
    bin,
    ['serve', '--dev', '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--rate-limit', 'off', ...extraArgs],
    { stdio: ['ignore', out, err] },
  );
  closeSync(out);
  closeSync(err);
  let exited = false;
  child.on('exit', () => {
    exited = true;
  });

  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline && !exited) {
    const text = await readFile(stdoutPath, 'utf8');
    const url = /CLOUDFLARE_BASE_URL=["']?(http:\/\/127\.0\.0\.1:\d+\/client\/v4)/.exec(text);
    const token = /CLOUDFLARE_API_TOKEN=["']?([^\s"']+)/.exec(text);
    if (url && token && /listening on http:\/\/127\.0\.0\.1:\d+/.test(text)) {
      return new Server({ baseURL: url[1], token: token[1], dataDir, tmp, child });
    }
    await sleep(50);
  }
  child.kill('SIGKILL');
  const logs = (await readFile(stdoutPath, 'utf8')) + (await readFile(stderrPath, 'utf8'));
  await rm(tmp, { recursive: true, force: true });
  throw new Error(`zonecert serve did not print its address and token:\n${logs}`);
}

export class Server {
  constructor({ baseURL, token, dataDir, tmp, child }) {
    this.baseURL = baseURL;
    this.token = token;
    this.dataDir = dataDir;
    this.tmp = tmp;
    this.child = child;
  }

  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const gone = new Promise((done) => this.child.once('exit', done));
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
      await gone;
      clearTimeout(timer);
    }
    await rm(this.tmp, { recursive: true, force: true });
  }

  /** Runs `zonecert ARGS --data-dir DIR --output json` and returns its JSON. */
  async admin(...args) {
    const full = [...args, '--data-dir', this.dataDir, '--output', 'json'];
    const { stdout } = await execFileAsync(zonecertBin(), full, { timeout: 60_000 });
    return JSON.parse(stdout);
  }

  async createZone(prefix = 'compat') {
    const name = `${prefix}-${randomUUID().slice(0, 10)}.test`;
    const zone = await this.admin('zone', 'create', name);
    if (zone.name !== name || !/^[0-9a-f]{32}$/.test(zone.id)) {
      throw new Error(`zone create answered ${JSON.stringify(zone)}`);
    }
    return zone;
  }

  async createToken(permissions, zones = []) {
    const args = ['token', 'create', '--name', `compat-${randomUUID().slice(0, 8)}`];
    for (const permission of permissions) args.push('--permission', permission);
    for (const zone of zones) args.push('--zone', zone);
    return (await this.admin(...args)).secret;
  }

  async createUser() {
    const email = `compat-${randomUUID().slice(0, 8)}@example.net`;
    const user = await this.admin('user', 'create', email);
    return { email, key: user.key };
  }

  /**
   * An official SDK client. No retries: a retried error would hide which response the server
   * gave first. `requests`, when given, collects every request the SDK sends (url, method,
   * headers, body) by observing the real fetch.
   */
  client(credentials = { apiToken: this.token }, requests = null) {
    const options = { baseURL: this.baseURL, maxRetries: 0, timeout: 60_000, ...credentials };
    if (requests) {
      options.fetch = async (url, init) => {
        requests.push({
          url: new URL(String(url)),
          method: (init?.method ?? 'GET').toUpperCase(),
          headers: new Headers(init?.headers),
          body: init?.body,
        });
        return fetch(url, init);
      };
    }
    return new Cloudflare(options);
  }
}

/** Orders an advanced pack for the zone apex plus one more host (the wildcard by default). */
export function orderPack(client, zone, { extraHost, validationMethod = 'txt' } = {}) {
  return client.ssl.certificatePacks.create({
    zone_id: zone.id,
    type: 'advanced',
    hosts: [zone.name, extraHost ?? `*.${zone.name}`],
    validation_method: validationMethod,
    validity_days: 90,
    certificate_authority: 'lets_encrypt',
  });
}
