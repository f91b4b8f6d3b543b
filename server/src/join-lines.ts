// The lines serve prints once its port is open: where a browser tab and a headless worker join,
// the certificate to check, the token, the dashboard. Each command is written as the person runs
// tabtrain (asTyped), so it runs as printed.
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { asTyped } from '@tabtrain/shared/cli-args';
import { isLoopbackHost } from './listener';
import type { Certificate } from './tls';

const bracket = (host: string) => (isIP(host) === 6 ? `[${host}]` : host);

/** Where people can reach this coordinator: the LAN addresses when listening on all interfaces. */
export function reachableHosts(host: string): string[] {
  if (host !== '0.0.0.0' && host !== '::') return [bracket(host)];
  return Object.values(networkInterfaces()).flat().filter((a) => a && a.family === 'IPv4' && !a.internal).map((a) => a!.address);
}

/** The lines that tell people how to join, printed once the port is open. */
export function joinLines(o: { host: string; port: number; cert: Certificate | null; token?: string; adminToken?: boolean; open?: boolean; tokenMade?: boolean }): string[] {
  const q = o.token ? `?token=${encodeURIComponent(o.token)}` : '';
  const tokenArg = o.token ? ` --token ${/^[\w.~-]+$/.test(o.token) ? o.token : `'${o.token.replace(/'/g, `'\\''`)}'`}` : '';
  const local = isLoopbackHost(bracket(o.host)) || o.host === 'localhost';
  const lan = local ? [] : reachableHosts(o.host);
  const here = local ? bracket(o.host) : o.host === '0.0.0.0' || o.host === '::' ? 'localhost' : null;
  const lines: string[] = [];
  const pin = o.cert?.selfSigned ? ` --fingerprint ${o.cert.fingerprint}` : '';
  if (o.cert && lan.length) {
    lines.push(`join from a browser on another machine: ${lan.map((h) => `https://${h}:${o.port}/${q}`).join(' or ')}${here ? ` (on this machine: http://${here}:${o.port}/${q})` : ''}`);
    if (o.cert.selfSigned) {
      lines.push(`  certificate: self-signed, SHA-256 ${o.cert.fingerprint} (${o.cert.origin === 'created' ? `made now: ${o.cert.why}` : 'made at an earlier start'}; ${o.cert.certFile})`);
      lines.push('  each browser warns about it once: check that it shows this fingerprint, then Advanced → Proceed; or install cert.pem on the machine (docs/BROWSER.md)');
    } else {
      lines.push(`  certificate: ${o.cert.certFile} (valid until ${o.cert.validTo.toISOString().slice(0, 10)}), SHA-256 ${o.cert.fingerprint}`);
    }
    lines.push(`headless: tabtrain worker --url wss://${lan[0]}:${o.port}/ws${pin}${tokenArg}`);
  } else if (lan.length) {
    lines.push(`join from a browser: ${[...lan.map((h) => `http://${h}:${o.port}/${q}`), ...(here ? [`http://${here}:${o.port}/${q}`] : [])].join(' or ')}`);
    lines.push('  plain http (--no-tls): tabs on other machines get no WebGPU, only WebGL (docs/BROWSER.md, "A secure context")');
    lines.push(`headless: tabtrain worker --url ws://${lan[0]}:${o.port}/ws${tokenArg}`);
  } else {
    const h = here ?? bracket(o.host);
    lines.push(`join from a browser on this machine: http://${h}:${o.port}/${q}${o.host === '0.0.0.0' || o.host === '::' ? ' (no LAN address found)' : ''}`);
    lines.push(`headless: tabtrain worker --url ws://${h}:${o.port}/ws${tokenArg}`);
  }
  if (o.token) {
    const made = o.tokenMade ? 'made for this run (--token T picks one)' : 'from --token';
    lines.push(`  token: ${made}; ${o.open ? 'workers without it join on probation (--open)' : 'workers without it are refused (serve --open admits them on probation)'}`);
  }
  const dash = here ? `http://${here}:${o.port}/dashboard` : `https://${lan[0]}:${o.port}/dashboard`;
  lines.push(`dashboard: ${dash} (${o.adminToken ? 'controls need --admin-token' : 'read-only: no --admin-token'}), metrics: /metrics`);
  return lines.map(asTyped);
}
