/**
 * What root on a card's machine can do with the card's files and the TPM, for the attestation
 * attack tests. The card's AIK blob is in card.json and loads under the card's persistent parent;
 * both have empty auths (a card's daemon needs nothing more), so root needs nothing more either:
 *
 *   signWithAik(tbs)       tpm2_load the AIK, tpm2_hash (the ticket says the data does not start
 *                          with TPM_GENERATED_VALUE), tpm2_sign with the ticket: any TBSCertificate
 *   createKey(...)         tpm2_create under the card parent, attributes, policy and password chosen
 *   importKey()            tpm2_import of a key made outside the TPM (openssl) under the card parent
 *   certifyWithAik(...)    TPM2_Certify of such a key by the AIK with the qualifying data a card
 *                          would use. tpm2-tools 5.4's tpm2_certify has no qualifying-data option,
 *                          so this one step goes through the project's TPM client, as any program
 *                          root writes could.
 *   mintCertificate(...)   a certificate with any subject and extensions, issued in the AIK
 *                          certificate's name and signed by signWithAik
 *
 * swtpm serves one connection: the caller stops the daemon around these calls.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { Tpm, TPM_ALG, ecdsaSignatureToDer, parsePublic2b, type TpmPublic } from '../../tpm/index.js';
import { decodeWrapped } from '../../vault/wrapped_blob.js';
import { keyIdentifier, type CertificateExtension } from '../../attestation/certificate_builder.js';
import { OID } from '../../attestation/oids.js';
import { runProgram } from './stack.js';

export interface CardSecretsOnDisk {
  serial: number;
  parentHandle: number;
  aik: { public: Uint8Array; private: Uint8Array };
}

/** Reads what the attack needs from <state>/cards/<slot>/card.json (root can read it). */
export async function readCardFiles(stateDir: string, slot: number): Promise<CardSecretsOnDisk> {
  const file = JSON.parse(await readFile(join(stateDir, 'cards', slot.toString().padStart(4, '0'), 'card.json'), 'utf8')) as {
    applet: { serial: number; vault: { parent: { handle: number }; aik?: string } };
  };
  const { vault, serial } = file.applet;
  if (!vault.aik) throw new Error(`card ${slot} has no AIK`);
  const aik = decodeWrapped(vault.aik);
  return { serial, parentHandle: vault.parent.handle, aik: { public: aik.public, private: aik.private } };
}

const hexHandle = (handle: number): string => `0x${handle.toString(16)}`;

export class RootAttacker {
  private step = 0;
  /** Keys made so far (createKey, importKey). */
  keysMade = 0;

  constructor(
    private readonly tcti: string,
    private readonly dir: string,
    private readonly card: CardSecretsOnDisk,
  ) {}

  private file(name: string): string {
    return join(this.dir, `attack-${this.step}-${name}`);
  }

  /** Runs a tpm2-tools command, then flushes what it left in swtpm's 3 object slots. */
  private async tool(program: string, args: string[]): Promise<string> {
    const result = await runProgram(program, [...args, '-T', this.tcti]);
    await runProgram('tpm2_flushcontext', ['-t', '-T', this.tcti]);
    if (result.code !== 0) throw new Error(`${program} failed: ${result.stderr}`);
    return result.stdout;
  }

  private async loadAik(): Promise<string> {
    const pub = this.file('aik.pub');
    const priv = this.file('aik.priv');
    await writeFile(pub, this.card.aik.public);
    await writeFile(priv, this.card.aik.private);
    const context = this.file('aik.ctx');
    await this.tool('tpm2_load', ['-C', hexHandle(this.card.parentHandle), '-u', pub, '-r', priv, '-c', context]);
    return context;
  }

  /** The AIK's DER ECDSA-SHA256 signature over any data TPM2_Hash accepts. */
  async signWithAik(data: Uint8Array): Promise<Uint8Array> {
    this.step++;
    const aik = await this.loadAik();
    const input = this.file('tbs');
    await writeFile(input, data);
    await this.tool('tpm2_hash', ['-C', 'o', '-g', 'sha256', '-o', this.file('digest'), '-t', this.file('ticket'), input]);
    await this.tool('tpm2_sign', ['-c', aik, '-g', 'sha256', '-s', 'ecdsa', '-d', '-t', this.file('ticket'), '-f', 'plain', '-o', this.file('sig'), this.file('digest')]);
    return new Uint8Array(await readFile(this.file('sig')));
  }

  /** tpm2_create under the card parent; returns TPM2B_PUBLIC and TPM2B_PRIVATE. */
  async createKey(options: { algorithm?: string; attributes?: string; policy?: Uint8Array; password?: string } = {}): Promise<{ public: Uint8Array; private: Uint8Array; publicArea: TpmPublic }> {
    this.step++;
    const args = ['-C', hexHandle(this.card.parentHandle), '-G', options.algorithm ?? 'ecc256', '-u', this.file('key.pub'), '-r', this.file('key.priv')];
    if (options.attributes) args.push('-a', options.attributes);
    if (options.policy) {
      await writeFile(this.file('policy'), options.policy);
      args.push('-L', this.file('policy'));
    }
    if (options.password) args.push('-p', options.password);
    await this.tool('tpm2_create', args);
    this.keysMade++;
    const pub = new Uint8Array(await readFile(this.file('key.pub')));
    return { public: pub, private: new Uint8Array(await readFile(this.file('key.priv'))), publicArea: parsePublic2b(pub) };
  }

  /** A P-256 key made by openssl, brought under the card parent with tpm2_import (empty password). */
  async importKey(): Promise<{ public: Uint8Array; private: Uint8Array; publicArea: TpmPublic }> {
    this.step++;
    const pem = this.file('outside.pem');
    const made = await runProgram('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', pem]);
    if (made.code !== 0) throw new Error(`openssl ecparam failed: ${made.stderr}`);
    await this.tool('tpm2_import', ['-C', hexHandle(this.card.parentHandle), '-G', 'ecc', '-i', pem, '-u', this.file('key.pub'), '-r', this.file('key.priv')]);
    this.keysMade++;
    const pub = new Uint8Array(await readFile(this.file('key.pub')));
    return { public: pub, private: new Uint8Array(await readFile(this.file('key.priv'))), publicArea: parsePublic2b(pub) };
  }

  /** TPM2_Certify(key, AIK, qualifyingData); the key is used with its password. */
  async certifyWithAik(key: { public: Uint8Array; private: Uint8Array }, qualifyingData: Uint8Array, password = ''): Promise<{ attest: Uint8Array; signature: Uint8Array }> {
    const tpm = await Tpm.open({ tcti: this.tcti });
    try {
      const parent = { handle: this.card.parentHandle, name: (await tpm.readPublic(this.card.parentHandle)).name };
      const aik = await tpm.load(parent, this.card.aik);
      const loaded = await tpm.load(parent, key);
      try {
        const { attest, signature } = await tpm.certify(loaded, aik, qualifyingData, { scheme: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256 }, {
          objectAuth: { auth: new Uint8Array(Buffer.from(password)) },
        });
        return { attest: attest.raw, signature: ecdsaSignatureToDer(signature) };
      } finally {
        await tpm.flushContext(loaded.handle);
        await tpm.flushContext(aik.handle);
      }
    } finally {
      await tpm.close();
    }
  }
}

const arrayBuffer = (bytes: Uint8Array): ArrayBuffer => new Uint8Array(bytes).buffer as ArrayBuffer;

/**
 * A certificate issued in the name of `issuer` (the AIK certificate) with whatever subject and
 * extensions the attacker likes, its TBSCertificate signed by `sign` (the AIK).
 */
export async function mintCertificate(
  spec: { issuer: Uint8Array; subjectCommonName: string; subjectPublicKey: Uint8Array; extensions: CertificateExtension[] },
  sign: (tbs: Uint8Array) => Promise<Uint8Array>,
): Promise<Uint8Array> {
  const issuer = pkijs.Certificate.fromBER(arrayBuffer(spec.issuer));
  const certificate = new pkijs.Certificate();
  certificate.version = 2;
  certificate.serialNumber = new asn1js.Integer({ valueHex: arrayBuffer(Uint8Array.of(0x11, ...randomBytes(15))) });
  certificate.issuer = issuer.subject;
  certificate.subject = new pkijs.RelativeDistinguishedNames({
    typesAndValues: [new pkijs.AttributeTypeAndValue({ type: OID.commonName, value: new asn1js.Utf8String({ value: spec.subjectCommonName }) })],
  });
  certificate.notBefore = new pkijs.Time({ type: pkijs.TimeType.UTCTime, value: new Date(Date.now() - 3_600_000) });
  certificate.notAfter = new pkijs.Time({ type: pkijs.TimeType.UTCTime, value: new Date(Date.now() + 30 * 86_400_000) });
  certificate.subjectPublicKeyInfo = pkijs.PublicKeyInfo.fromBER(arrayBuffer(spec.subjectPublicKey));
  certificate.signature = new pkijs.AlgorithmIdentifier({ algorithmId: OID.ecdsaWithSha256 });
  certificate.signatureAlgorithm = new pkijs.AlgorithmIdentifier({ algorithmId: OID.ecdsaWithSha256 });
  const issuerKey = new Uint8Array(issuer.subjectPublicKeyInfo.toSchema().toBER());
  const authorityKeyId = new pkijs.AuthorityKeyIdentifier({ keyIdentifier: new asn1js.OctetString({ valueHex: arrayBuffer(keyIdentifier(issuerKey)) }) });
  certificate.extensions = [
    new pkijs.Extension({ extnID: OID.authorityKeyIdentifier, critical: false, extnValue: authorityKeyId.toSchema().toBER() }),
    ...spec.extensions.map((e) => new pkijs.Extension({ extnID: e.oid, critical: e.critical, extnValue: arrayBuffer(e.value) })),
  ];
  const tbs = new Uint8Array(certificate.encodeTBS().toBER());
  certificate.tbsView = tbs;
  certificate.signatureValue = new asn1js.BitString({ valueHex: arrayBuffer(await sign(tbs)) });
  return new Uint8Array(certificate.toSchema(false).toBER());
}

/** SubjectAltName with DNS names, IP addresses (4 or 16 bytes) and mail addresses. */
export function subjectAltName(names: { dns?: string[]; ip?: Uint8Array[]; email?: string[] }): CertificateExtension {
  const general = [
    ...(names.dns ?? []).map((value) => new pkijs.GeneralName({ type: 2, value })),
    ...(names.ip ?? []).map((value) => new pkijs.GeneralName({ type: 7, value: new asn1js.OctetString({ valueHex: arrayBuffer(value) }) })),
    ...(names.email ?? []).map((value) => new pkijs.GeneralName({ type: 1, value })),
  ];
  return { oid: OID.subjectAltName, critical: false, value: new Uint8Array(new pkijs.GeneralNames({ names: general }).toSchema().toBER()) };
}

/** ExtendedKeyUsage with these purposes (e.g. 1.3.6.1.5.5.7.3.1 serverAuth). */
export function extendedKeyUsage(purposes: string[]): CertificateExtension {
  return { oid: OID.extKeyUsage, critical: false, value: new Uint8Array(new pkijs.ExtKeyUsage({ keyPurposes: purposes }).toSchema().toBER()) };
}

/** A fresh key pair's SubjectPublicKeyInfo, for certificates whose private key does not matter. */
export function someSubjectKey(): Uint8Array {
  return new Uint8Array(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' }));
}
