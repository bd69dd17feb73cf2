/**
 * tpm/ — a TPM 2.0 client library in TypeScript: transports (/dev/tpmrm0, swtpm TCP), marshalling,
 * salted HMAC sessions with parameter encryption, and the commands tpmvsc needs. It knows nothing
 * of smart cards.
 *
 *   const tpm = await Tpm.open({ tcti: 'swtpm:port=2321' });
 *   const srk = await tpm.storageRoot();                  // ECC P-256 SRK, cached, salts sessions
 *   const blob = await tpm.create(srk, eccSigningTemplate(TPM_ECC.NIST_P256), { userAuth: pinAuth });
 *   const key = await tpm.load(srk, blob);
 *   const sig = await tpm.sign(key, digest, { scheme: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256 }, { auth: pinAuth });
 *   await tpm.flushContext(key.handle);
 *   await tpm.close();
 */
export * from './constants.js';
export * from './errors.js';
export * from './types.js';
export * from './tpm_options.js';
export * from './tpm.js';
export * from './templates.js';
export * from './structures.js';
export * from './names.js';
export { makeCredential, type Credential } from './credential.js';
export { Reader, Writer } from './marshal.js';
export { parseTcti, type TctiConfig } from './tcti.js';
export type { TpmTransport } from './transport.js';
export { openTransport } from './transport.js';
export { ecdsaSignatureToDer, eccPointToUncompressed, rsaPublicKeyToNode, eccPublicKeyToNode, publicKeyToNode } from './keys.js';
export * from './policy_digest.js';
