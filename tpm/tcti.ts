/**
 * TCTI-style transport strings, as tpm2-tss spells them:
 *   device                         -> /dev/tpmrm0
 *   device:/dev/tpmrm1             -> that device
 *   /dev/tpmrm0                    -> that device
 *   swtpm                          -> 127.0.0.1:2321
 *   swtpm:host=127.0.0.1,port=P    -> TCP, simulator framing (host must be loopback)
 * '/dev/tpm0' (the raw device without the kernel resource manager) is refused.
 */
import { TpmTransportError } from './errors.js';

export type TctiConfig =
  | { kind: 'device'; path: string }
  | { kind: 'swtpm'; host: string; port: number };

export const DEFAULT_TCTI = 'device:/dev/tpmrm0';

function devicePath(path: string): TctiConfig {
  if (!path.startsWith('/')) throw new TpmTransportError('TCTI_SYNTAX', `device path must be absolute: '${path}'`);
  if (/^\/dev\/tpm\d+$/.test(path)) {
    throw new TpmTransportError('NO_RESOURCE_MANAGER', `${path} has no resource manager; use ${path.replace('/dev/tpm', '/dev/tpmrm')}`);
  }
  return { kind: 'device', path };
}

export function parseTcti(tcti: string = DEFAULT_TCTI): TctiConfig {
  const s = tcti.trim();
  if (s === '' || s === 'device') return { kind: 'device', path: '/dev/tpmrm0' };
  if (s.startsWith('/')) return devicePath(s);
  const colon = s.indexOf(':');
  const kind = colon < 0 ? s : s.slice(0, colon);
  const conf = colon < 0 ? '' : s.slice(colon + 1);
  if (kind === 'device') return devicePath(conf || '/dev/tpmrm0');
  if (kind !== 'swtpm') throw new TpmTransportError('TCTI_SYNTAX', `unknown TCTI '${kind}' (use device:... or swtpm:...)`);
  let host = '127.0.0.1';
  let port = 2321;
  for (const part of conf.split(',').filter((p) => p !== '')) {
    const eq = part.indexOf('=');
    if (eq < 0) throw new TpmTransportError('TCTI_SYNTAX', `expected key=value in '${part}'`);
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (key === 'host') {
      if (value !== '127.0.0.1' && value !== 'localhost' && value !== '::1') {
        throw new TpmTransportError('TCTI_SYNTAX', `swtpm host must be loopback, got '${value}'`);
      }
      host = value === 'localhost' ? '127.0.0.1' : value;
    } else if (key === 'port') {
      if (!/^\d{1,5}$/.test(value) || Number(value) < 1 || Number(value) > 65535) {
        throw new TpmTransportError('TCTI_SYNTAX', `bad port '${value}'`);
      }
      port = Number(value);
    } else {
      throw new TpmTransportError('TCTI_SYNTAX', `unknown swtpm option '${key}'`);
    }
  }
  return { kind: 'swtpm', host, port };
}
