/**
 * TPM2_MakeCredential in software (what a CA does to challenge an attestation key), for an ECC
 * or RSA endorsement key (TCG TPM 2.0 Part 1, 24 Credential Protection):
 *
 *   seed      ECC EK: ephemeral e; Z = x(e * Q_ek); seed = KDFe(nameAlg, Z, "IDENTITY", x(e*G), x(Q_ek), digestBits)
 *             secret = TPMS_ECC_POINT(e*G)
 *             RSA EK: seed = random(digest size); secret = RSA-OAEP(nameAlg, label "IDENTITY\0")(seed)
 *   symKey    = KDFa(nameAlg, seed, "STORAGE", akName, "", symKeyBits)
 *   encIdentity = AES-CFB(symKey, IV = 0)(u16 size | credential)
 *   hmacKey   = KDFa(nameAlg, seed, "INTEGRITY", "", "", digestBits)
 *   integrity = HMAC(hmacKey, encIdentity || akName)
 *   credentialBlob (TPMS_ID_OBJECT) = TPM2B integrity | encIdentity
 */
import { constants, createCipheriv, createECDH, createHmac, publicEncrypt, randomBytes } from 'node:crypto';
import { TPM_ALG } from './constants.js';
import { TpmProtocolError } from './errors.js';
import { kdfa, kdfe } from './kdf.js';
import { curveInfo, leftPad, rsaPublicKeyToNode } from './keys.js';
import { Writer } from './marshal.js';
import { hashName, hashSize } from './structures.js';
import type { TpmPublic } from './types.js';

export interface Credential {
  /** TPMS_ID_OBJECT contents for TPM2B_ID_OBJECT (pass to Tpm.activateCredential). */
  credentialBlob: Uint8Array;
  /** TPM2B_ENCRYPTED_SECRET contents (pass to Tpm.activateCredential). */
  secret: Uint8Array;
}

export function makeCredential(ekPublic: TpmPublic, akName: Uint8Array, credential: Uint8Array): Credential {
  if (ekPublic.type === TPM_ALG.KEYEDHASH) throw new TpmProtocolError('BAD_INPUT', 'makeCredential needs an RSA or ECC key');
  if (ekPublic.symmetric.algorithm !== TPM_ALG.AES) throw new TpmProtocolError('BAD_INPUT', 'the EK has no symmetric algorithm');
  if (credential.length > hashSize(ekPublic.nameAlg)) throw new TpmProtocolError('BAD_INPUT', 'credential longer than the EK digest');
  const nameAlg = ekPublic.nameAlg;
  const bits = hashSize(nameAlg) * 8;
  let seed: Buffer;
  let secret: Buffer;
  if (ekPublic.type === TPM_ALG.ECC) {
    const { nodeName, size } = curveInfo(ekPublic.curveId);
    const ecdh = createECDH(nodeName);
    ecdh.generateKeys();
    const qx = leftPad(ekPublic.unique.x, size);
    const z = ecdh.computeSecret(Buffer.concat([Buffer.of(4), qx, leftPad(ekPublic.unique.y, size)]));
    const pub = ecdh.getPublicKey();
    seed = kdfe(nameAlg, z, 'IDENTITY', pub.subarray(1, 1 + size), qx, bits);
    z.fill(0);
    secret = new Writer(2 * size + 4).tpm2b(pub.subarray(1, 1 + size)).tpm2b(pub.subarray(1 + size)).finish();
  } else {
    seed = randomBytes(hashSize(nameAlg));
    secret = publicEncrypt({
      key: rsaPublicKeyToNode(ekPublic.unique, ekPublic.exponent),
      padding: constants.RSA_PKCS1_OAEP_PADDING,
      oaepHash: hashName(nameAlg),
      oaepLabel: Buffer.from('IDENTITY\0', 'latin1'),
    }, seed);
  }
  const symKey = kdfa(nameAlg, seed, 'STORAGE', akName, new Uint8Array(0), ekPublic.symmetric.keyBits);
  const plain = new Writer(credential.length + 2).tpm2b(credential).finish();
  const cipher = createCipheriv(`aes-${ekPublic.symmetric.keyBits}-cfb`, symKey, Buffer.alloc(16));
  const encIdentity = Buffer.concat([cipher.update(plain), cipher.final()]);
  const hmacKey = kdfa(nameAlg, seed, 'INTEGRITY', new Uint8Array(0), new Uint8Array(0), bits);
  const integrity = createHmac(hashName(nameAlg), hmacKey).update(encIdentity).update(akName).digest();
  seed.fill(0);
  symKey.fill(0);
  hmacKey.fill(0);
  return { credentialBlob: new Writer(encIdentity.length + integrity.length + 2).tpm2b(integrity).bytes(encIdentity).finish(), secret };
}
