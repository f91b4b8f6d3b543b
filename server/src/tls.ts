// The coordinator's TLS certificate. Browsers offer WebGPU only to secure contexts (https, or
// http on localhost), so a tab on another machine needs https.
//
// --tls-cert/--tls-key: a real certificate (a public CA's, or a private CA the workers trust).
// Without them: a self-signed certificate made at the first start for this machine's host names
// and addresses, kept in the state folder (<state>/tls/cert.pem, key.pem with mode 0600) so its
// fingerprint stays the same across runs. It is made again only when it no longer names every
// current address of the machine or is within 30 days of expiring.
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { chmodSync, existsSync, openSync, closeSync, fsyncSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir, hostname, networkInterfaces } from 'node:os';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { generate } from 'selfsigned';
import { makeDirs } from './output-paths';

export class TlsError extends Error {}

export interface Certificate {
  cert: string;
  key: string;
  /** SHA-256 of the DER certificate, as browsers show it: "AB:CD:…" (32 pairs). */
  fingerprint: string;
  selfSigned: boolean;
  /** Where the certificate lives, to install it on a worker machine. */
  certFile: string;
  /** DNS names and IP addresses it is valid for. */
  names: string[];
  validTo: Date;
  /** given (--tls-cert), stored (made by an earlier start) or created now. */
  origin: 'given' | 'stored' | 'created';
  /** Why a new one was made (first start, the addresses changed, expiry). */
  why?: string;
}

/** Self-signed certificates last 397 days (the longest any browser accepts) and are renewed 30 days before. */
const VALID_DAYS = 397;
const RENEW_DAYS = 30;
const DAY_MS = 86_400_000;

/** The state folder: --state-dir, else $TABTRAIN_STATE_DIR, else ~/.tabtrain. */
export function defaultStateDir(): string {
  return process.env.TABTRAIN_STATE_DIR || join(homedir(), '.tabtrain');
}

/** "[::1]" and "0:0:0:0:0:0:0:1" are one address: compare canonical forms. */
export function canonicalName(name: string): string {
  const bare = name.replace(/^\[|\]$/g, '');
  if (isIP(bare) === 6) return new URL(`http://[${bare}]/`).hostname;
  return bare.toLowerCase();
}

/**
 * Every name a worker may use to reach this machine: its host name (and NAME.local for mDNS),
 * localhost, the loopback addresses and every interface address (IPv6 link-local ones need a zone
 * and never appear in URLs), plus --host when it is a specific address.
 */
export function machineNames(host?: string): string[] {
  const names = new Set<string>();
  const h = hostname().toLowerCase();
  if (h) {
    names.add(h);
    if (!h.includes('.')) names.add(`${h}.local`);
  }
  for (const n of ['localhost', '127.0.0.1', '::1']) names.add(n);
  for (const a of Object.values(networkInterfaces()).flat()) {
    if (!a || (a.family === 'IPv6' && a.address.toLowerCase().startsWith('fe80'))) continue;
    names.add(a.address);
  }
  if (host && host !== '0.0.0.0' && host !== '::') names.add(host);
  return [...names].filter((n) => /^[A-Za-z0-9.:-]+$/.test(n));
}

function sanNames(x: X509Certificate): string[] {
  return (x.subjectAltName ?? '').split(/,\s*/).map((s) => s.replace(/^(DNS|IP Address):/, '')).filter(Boolean);
}

function isSelfSigned(x: X509Certificate): boolean {
  try {
    return x.issuer === x.subject && x.verify(x.publicKey);
  } catch {
    return false;
  }
}

function writeAtomic(path: string, data: string, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data, { mode });
  chmodSync(tmp, mode);
  const fd = openSync(tmp, 'r');
  try { fsyncSync(fd); } finally { closeSync(fd); }
  renameSync(tmp, path);
}

function describe(cert: string, key: string, certFile: string, origin: Certificate['origin'], why?: string): Certificate {
  const x = new X509Certificate(cert);
  return {
    cert, key, fingerprint: x.fingerprint256, selfSigned: isSelfSigned(x), certFile, names: sanNames(x),
    validTo: new Date(x.validTo), origin, why,
  };
}

/** A key and a certificate that belong together, or the reason they don't. */
function parsePair(cert: string, key: string): { x: X509Certificate; k: KeyObject } | string {
  let x: X509Certificate;
  let k: KeyObject;
  try { x = new X509Certificate(cert); } catch (e) { return `the certificate is not PEM or DER (${(e as Error).message})`; }
  try { k = createPrivateKey(key); } catch (e) { return `the key is not a PEM private key (${(e as Error).message})`; }
  if (!x.checkPrivateKey(k)) return 'the key does not belong to the certificate';
  return { x, k };
}

/** --tls-cert FILE --tls-key FILE: read, check that they match and that the certificate is current. */
export function loadCertificateFiles(certFile: string, keyFile: string, now = new Date()): Certificate {
  const read = (flag: string, file: string) => {
    try {
      return readFileSync(file, 'utf8');
    } catch (e) {
      throw new TlsError(`${flag} ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); give the PEM file`);
    }
  };
  const cert = read('--tls-cert', certFile);
  const key = read('--tls-key', keyFile);
  const pair = parsePair(cert, key);
  if (typeof pair === 'string') throw new TlsError(`--tls-cert ${certFile} / --tls-key ${keyFile}: ${pair}; give the certificate and its own private key, both PEM`);
  const until = new Date(pair.x.validTo);
  if (until.getTime() < now.getTime()) throw new TlsError(`--tls-cert ${certFile} expired on ${until.toISOString().slice(0, 10)}: renew it, or leave out --tls-cert/--tls-key to use a self-signed certificate`);
  return describe(cert, key, certFile, 'given');
}

/** Why a stored self-signed certificate must be made again, or null if it still serves. */
function staleness(x: X509Certificate, wanted: string[], now: Date): string | null {
  const have = new Set(sanNames(x).map(canonicalName));
  const missing = wanted.filter((n) => !have.has(canonicalName(n)));
  if (missing.length) return `this machine's names changed (${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', …' : ''} not in the old one)`;
  const until = new Date(x.validTo).getTime();
  if (until - now.getTime() < RENEW_DAYS * DAY_MS) return `the old one ${until < now.getTime() ? 'expired' : 'expires'} on ${new Date(until).toISOString().slice(0, 10)}`;
  return null;
}

/**
 * The self-signed certificate in `<stateDir>/tls`, made (or made again) when needed. Two starts at
 * the same moment may both make one; the files are renamed into place whole, and the pair read back
 * is the one used, so the fingerprint printed is always the one on disk.
 */
export async function selfSignedCertificate(stateDir: string, names: string[], now = new Date()): Promise<Certificate> {
  const dir = join(stateDir, 'tls');
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  let why = 'first start';
  if (existsSync(certFile) && existsSync(keyFile)) {
    const pair = parsePair(readFileSync(certFile, 'utf8'), readFileSync(keyFile, 'utf8'));
    if (typeof pair === 'string') why = `the stored one was unusable: ${pair}`;
    else {
      const stale = staleness(pair.x, names, now);
      if (!stale) return describe(readFileSync(certFile, 'utf8'), readFileSync(keyFile, 'utf8'), certFile, 'stored');
      why = stale;
    }
  }
  try {
    makeDirs(dir, 0o700);
  } catch (e) {
    throw new TlsError(`cannot create ${dir} for the TLS certificate (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): pass --state-dir DIR with a writable folder, or --tls-cert/--tls-key`);
  }
  const pems = await generate([{ name: 'commonName', value: `tabtrain on ${hostname() || 'this machine'}` }, { name: 'organizationName', value: 'tabtrain (self-signed)' }], {
    keyType: 'ec', curve: 'P-256', algorithm: 'sha256',
    notBeforeDate: new Date(now.getTime() - 60_000), notAfterDate: new Date(now.getTime() + VALID_DAYS * DAY_MS),
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: names.map((n) => (isIP(n) ? { type: 7 as const, ip: n } : { type: 2 as const, value: n })) },
    ],
  });
  try {
    writeAtomic(keyFile, pems.private, 0o600);
    writeAtomic(certFile, pems.cert, 0o644);
  } catch (e) {
    throw new TlsError(`cannot write the TLS certificate to ${dir} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): pass --state-dir DIR with a writable folder`);
  }
  const cert = readFileSync(certFile, 'utf8');
  const key = readFileSync(keyFile, 'utf8');
  if (typeof parsePair(cert, key) === 'string') return describe(pems.cert, pems.private, certFile, 'created', why); // a concurrent start swapped one file
  return describe(cert, key, certFile, 'created', why);
}

/** What `serve` uses: the given files, else the stored or a new self-signed certificate. */
export async function serverCertificate(opts: { certFile?: string; keyFile?: string; stateDir?: string; host?: string; now?: Date }): Promise<Certificate> {
  if (opts.certFile || opts.keyFile) {
    if (!opts.certFile || !opts.keyFile) throw new TlsError('--tls-cert and --tls-key go together: give both (PEM files), or neither for a self-signed certificate');
    return loadCertificateFiles(opts.certFile, opts.keyFile, opts.now);
  }
  return selfSignedCertificate(opts.stateDir ?? defaultStateDir(), machineNames(opts.host), opts.now);
}
