/**
 * Bytes for asn1js and pkijs, which take an ArrayBuffer: a copy of exactly these bytes (a
 * Uint8Array may be a view into a larger or shared buffer, e.g. a Buffer from node's pool).
 */
export const arrayBuffer = (bytes: Uint8Array): ArrayBuffer => new Uint8Array(bytes).buffer as ArrayBuffer;
