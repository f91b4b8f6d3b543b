// TLS on the coordinator's port: the self-signed certificate kept in the state folder, http and
// https (and ws and wss) on one port, and what plain http from a non-localhost name gets. Real
// sockets on loopback; no browser here (tests/browser/tls.test.ts has those).
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createConnection } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { createListener, isLoopbackHost } from '../../server/src/listener';
import { TlsError, canonicalName, loadCertificateFiles, machineNames, selfSignedCertificate, serverCertificate, type Certificate } from '../../server/src/tls';

const state = mkdtempSync(join(tmpdir(), 'tabtrain-tls-'));

describe('the self-signed certificate in the state folder', () => {
  it('is made once for every name of this machine, kept (key mode 0600) and reused with the same fingerprint', async () => {
    const names = machineNames('127.0.0.1');
    expect(names).toEqual(expect.arrayContaining(['localhost', '127.0.0.1', '::1']));
    const first = await selfSignedCertificate(state, names);
    expect(first.origin).toBe('created');
    expect(first.why).toBe('first start');
    expect(first.selfSigned).toBe(true);
    expect(first.fingerprint).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    expect(first.fingerprint).toBe(new X509Certificate(first.cert).fingerprint256);
    expect(new Set(first.names.map(canonicalName))).toEqual(new Set(names.map(canonicalName)));
    expect(statSync(join(state, 'tls/key.pem')).mode & 0o777).toBe(0o600);
    // Valid for 397 days: the longest any browser accepts.
    const days = (first.validTo.getTime() - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(396);
    expect(days).toBeLessThan(398);
    const again = await selfSignedCertificate(state, names);
    expect(again.origin).toBe('stored');
    expect(again.fingerprint).toBe(first.fingerprint);
  });

  it('is made again when the machine has a name it lacks, or when it is about to expire', async () => {
    const before = await selfSignedCertificate(state, machineNames());
    const moved = await selfSignedCertificate(state, [...machineNames(), '10.99.0.7']);
    expect(moved.origin).toBe('created');
    expect(moved.why).toMatch(/10\.99\.0\.7/);
    expect(moved.fingerprint).not.toBe(before.fingerprint);
    const soon = new Date(moved.validTo.getTime() - 10 * 86_400_000);
    const renewed = await selfSignedCertificate(state, [...machineNames(), '10.99.0.7'], soon);
    expect(renewed.origin).toBe('created');
    expect(renewed.why).toMatch(/expires on/);
  });

  it('--tls-cert/--tls-key: read, checked against each other and for expiry; one without the other is refused', async () => {
    const other = await selfSignedCertificate(mkdtempSync(join(tmpdir(), 'tabtrain-tls-other-')), ['localhost']);
    const dir = mkdtempSync(join(tmpdir(), 'tabtrain-tls-files-'));
    const mine = await selfSignedCertificate(state, machineNames());
    writeFileSync(join(dir, 'cert.pem'), mine.cert);
    writeFileSync(join(dir, 'key.pem'), mine.key);
    writeFileSync(join(dir, 'other-key.pem'), other.key);
    const given = loadCertificateFiles(join(dir, 'cert.pem'), join(dir, 'key.pem'));
    expect(given).toMatchObject({ origin: 'given', fingerprint: mine.fingerprint, certFile: join(dir, 'cert.pem') });
    expect(() => loadCertificateFiles(join(dir, 'cert.pem'), join(dir, 'other-key.pem'))).toThrow(/the key does not belong to the certificate/);
    expect(() => loadCertificateFiles(join(dir, 'missing.pem'), join(dir, 'key.pem'))).toThrow(/--tls-cert .*missing\.pem: cannot read it \(ENOENT\)/);
    expect(() => loadCertificateFiles(join(dir, 'cert.pem'), join(dir, 'key.pem'), new Date(Date.now() + 800 * 86_400_000))).toThrow(/expired on .*: renew it/);
    await expect(serverCertificate({ certFile: join(dir, 'cert.pem') })).rejects.toThrow(TlsError);
  });
});

describe('http and https on one port', () => {
  let cert: Certificate;
  let server: Server;
  let port: number;
  const upgrades: string[] = [];

  beforeAll(async () => {
    cert = await selfSignedCertificate(state, machineNames());
    server = createListener((req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(`${(req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http'} ${req.url}`);
    }, { cert: cert.cert, key: cert.key, fingerprint: cert.fingerprint, selfSigned: true });
    const wss = new WebSocketServer({ noServer: true });
    server.on('upgrade', (req: IncomingMessage, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => {
      upgrades.push((req.socket as { encrypted?: boolean }).encrypted ? 'wss' : 'ws');
      ws.on('message', (m) => ws.send(`echo ${m}`));
    }));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as { port: number }).port;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  const get = (tls: boolean, path: string, host?: string) => new Promise<{ status: number; body: string; type: string }>((resolve, reject) => {
    const req = (tls ? httpsRequest : httpRequest)({ host: '127.0.0.1', port, path, headers: host ? { host } : {}, rejectUnauthorized: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body, type: String(res.headers['content-type']) }));
    });
    req.on('error', reject);
    req.end();
  });

  it('answers http and https requests on the same port, with the same handler', async () => {
    expect(await get(false, '/x')).toMatchObject({ status: 200, body: 'http /x' });
    expect(await get(true, '/y')).toMatchObject({ status: 200, body: 'https /y' });
    // The server presents our certificate.
    const peer = await new Promise<string>((resolve, reject) => {
      const req = httpsRequest({ host: '127.0.0.1', port, path: '/', rejectUnauthorized: false }, (res) => {
        resolve((res.socket as unknown as { getPeerCertificate(): { fingerprint256: string } }).getPeerCertificate().fingerprint256);
        res.resume();
      });
      req.on('error', reject);
      req.end();
    });
    expect(peer).toBe(cert.fingerprint);
  });

  it('delivers WebSocket upgrades from ws:// and wss:// to the same listeners', async () => {
    const talk = (url: string) => new Promise<string>((resolve, reject) => {
      const ws = new WebSocket(url, { rejectUnauthorized: false });
      ws.on('open', () => ws.send('hi'));
      ws.on('message', (m) => { resolve(String(m)); ws.close(); });
      ws.on('error', reject);
    });
    expect(await talk(`ws://127.0.0.1:${port}/ws`)).toBe('echo hi');
    expect(await talk(`wss://127.0.0.1:${port}/ws`)).toBe('echo hi');
    expect(upgrades).toEqual(['ws', 'wss']);
  });

  it('plain http for the worker page by a name that is not localhost gets a notice that links to https', async () => {
    const notice = await get(false, '/?backend=webgpu', `tabtrain.test:${port}`);
    expect(notice.status).toBe(200);
    expect(notice.type).toMatch(/text\/html/);
    expect(notice.body).toContain(`href="https://tabtrain.test:${port}/?backend=webgpu"`);
    expect(notice.body).toContain(cert.fingerprint);
    expect(notice.body).toMatch(/needs https to use this machine's GPU/);
    // localhost and 127.x are secure contexts over plain http: the page itself.
    expect((await get(false, '/', `localhost:${port}`)).body).toBe('http /');
    expect((await get(false, '/', `127.0.0.1:${port}`)).body).toBe('http /');
    // Everything else over plain http is served as usual (the dashboard, the API), and ?http=1 opts out.
    expect((await get(false, '/dashboard', `tabtrain.test:${port}`)).body).toBe('http /dashboard');
    expect((await get(false, '/?http=1', `tabtrain.test:${port}`)).body).toBe('http /?http=1');
    expect((await get(true, '/', `tabtrain.test:${port}`)).body).toBe('https /');
    // A hostile Host header is not echoed into the page.
    expect((await get(false, '/', '<script>')).status).toBe(400);
  });

  it('closes at once with sockets that never finish a request: silent, a half TLS hello, or gone after the handshake', async () => {
    const s = createListener((_req, res) => res.end('x'), { cert: cert.cert, key: cert.key });
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const p = (s.address() as { port: number }).port;
    const silent = createConnection(p, '127.0.0.1');
    const half = createConnection(p, '127.0.0.1', () => half.write(Buffer.from([0x16, 3, 1])));
    const left = tlsConnect({ host: '127.0.0.1', port: p, rejectUnauthorized: false }, () => left.destroy());
    const kept = tlsConnect({ host: '127.0.0.1', port: p, rejectUnauthorized: false });
    for (const c of [silent, half, left, kept]) c.on('error', () => {});
    await new Promise((r) => kept.once('secureConnect', r));
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  it('an Expect other than 100-continue gets 417 and the connection closed, not held open for the body it declared', async () => {
    for (const tls of [false, true]) {
      const s = createListener((_req, res) => res.end('x'), tls ? { cert: cert.cert, key: cert.key } : undefined);
      await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
      const port = (s.address() as { port: number }).port;
      const head = `POST /api/control HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: nonsense\r\nContent-Length: 100000000\r\n\r\n{}`;
      const sock = tls ? tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => sock.write(head)) : createConnection(port, '127.0.0.1', () => sock.write(head));
      let text = '';
      sock.on('data', (d) => { text += d; });
      const closed = await Promise.race([new Promise((r) => sock.once('close', () => r(true))), new Promise((r) => setTimeout(() => r(false), 2000))]);
      expect(text, tls ? 'https' : 'http').toMatch(/^HTTP\/1\.1 417 /);
      expect(closed, `${tls ? 'https' : 'http'}: closed after the 417`).toBe(true);
      sock.destroy();
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
  });

  it('knows which names are secure contexts over plain http', () => {
    for (const h of ['localhost:8080', 'a.localhost', '127.0.0.1:1', '127.9.9.9', '[::1]:8080']) expect(isLoopbackHost(h), h).toBe(true);
    for (const h of ['tabtrain.test:8080', '10.0.0.5:8080', '[fe80::1]', 'localhost.example.com', undefined]) expect(isLoopbackHost(h), String(h)).toBe(false);
  });
});
