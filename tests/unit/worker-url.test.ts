// What a person may pass to `tabtrain worker --url`: the addresses the coordinator prints, as printed.
import { describe, expect, it } from 'vitest';
import { UsageError, workerUrl } from '../../client/src/worker-cli';

describe('workerUrl', () => {
  it('keeps a ws(s) URL and gives a bare path /ws', () => {
    expect(workerUrl('wss://10.0.0.5:8080/ws')).toBe('wss://10.0.0.5:8080/ws');
    expect(workerUrl('ws://localhost:8080')).toBe('ws://localhost:8080/ws');
  });
  it("turns the page's address into the socket's, its token kept for the caller", () => {
    expect(workerUrl('https://tabtrain.test:8080/?token=abc')).toBe('wss://tabtrain.test:8080/ws?token=abc');
    expect(workerUrl('http://h:1/')).toBe('ws://h:1/ws');
  });
  it('reads a bare HOST:PORT as wss when the worker was given a fingerprint or CA, else ws', () => {
    expect(workerUrl('10.0.0.5:8080', true)).toBe('wss://10.0.0.5:8080/ws');
    expect(workerUrl('10.0.0.5:8080')).toBe('ws://10.0.0.5:8080/ws');
    // An explicit scheme wins: a plain ws:// with a fingerprint is the caller's mistake to name.
    expect(workerUrl('ws://10.0.0.5:8080', true)).toBe('ws://10.0.0.5:8080/ws');
  });
  it('names what is wrong with an address it cannot use', () => {
    expect(() => workerUrl('ftp://h:1')).toThrow(UsageError);
    expect(() => workerUrl('ftp://h:1')).toThrow(/scheme must be ws/);
    expect(() => workerUrl('http://[::1')).toThrow(/is not a URL/);
  });
});
