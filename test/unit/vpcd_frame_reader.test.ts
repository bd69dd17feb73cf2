import test from 'ava';
import fc from 'fast-check';

import { encodeFrame, FrameReader, MAX_FRAME_PAYLOAD, VpcdFrameError } from '../../daemon/frame_reader.js';

const hex = (frames: Buffer[]) => frames.map((frame) => frame.toString('hex'));

/** Pushes a chunk and takes every frame it completed. */
function pushAll(reader: FrameReader, chunk: Uint8Array): Buffer[] {
  reader.push(chunk);
  const frames: Buffer[] = [];
  for (let frame = reader.next(); frame; frame = reader.next()) frames.push(frame);
  return frames;
}

const rows: { name: string; chunks: string[]; want: string[] | 'error' }[] = [
  { name: 'one control frame', chunks: ['000104'], want: ['04'] },
  { name: 'length and payload in two chunks (as the stock driver sends)', chunks: ['0004', '00a40400'], want: ['00a40400'] },
  { name: 'length split across chunks', chunks: ['00', '01', '01'], want: ['01'] },
  { name: 'several frames in one chunk', chunks: ['000104000101000400cb3fff'], want: ['04', '01', '00cb3fff'] },
  { name: 'a frame and the start of the next', chunks: ['00010400', '0201', '02'], want: ['04', '0102'] },
  { name: 'nothing complete yet', chunks: ['0005', '0102'], want: [] },
  { name: 'zero-length frame', chunks: ['0000'], want: 'error' },
  { name: 'zero-length frame after a good one', chunks: ['0001040000'], want: 'error' },
];

for (const row of rows) {
  test(`FrameReader: ${row.name}`, (t) => {
    const reader = new FrameReader();
    const run = () => row.chunks.flatMap((chunk) => hex(pushAll(reader, Buffer.from(chunk, 'hex'))));
    if (row.want === 'error') t.throws(run, { instanceOf: VpcdFrameError });
    else t.deepEqual(run(), row.want);
  });
}

test('encodeFrame writes the big-endian length and the payload in one buffer', (t) => {
  t.is(encodeFrame(Uint8Array.of(0x90, 0x00)).toString('hex'), '00029000');
  const big = encodeFrame(new Uint8Array(MAX_FRAME_PAYLOAD));
  t.is(big.length, MAX_FRAME_PAYLOAD + 2);
  t.is(big.readUInt16BE(0), MAX_FRAME_PAYLOAD);
  t.throws(() => encodeFrame(new Uint8Array(MAX_FRAME_PAYLOAD + 1)), { instanceOf: VpcdFrameError });
});

test('FrameReader returns the same frames however the stream is cut', (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ minLength: 1, maxLength: 3000 }), { minLength: 1, maxLength: 8 }),
      fc.array(fc.integer({ min: 1, max: 4000 }), { minLength: 1, maxLength: 20 }),
      (payloads, cuts) => {
        const stream = Buffer.concat(payloads.map((payload) => encodeFrame(payload)));
        const reader = new FrameReader();
        const frames: Buffer[] = [];
        let offset = 0;
        for (let i = 0; offset < stream.length; i++) {
          const size = cuts[i % cuts.length]!;
          frames.push(...pushAll(reader, stream.subarray(offset, offset + size)));
          offset += size;
        }
        t.deepEqual(hex(frames), payloads.map((payload) => Buffer.from(payload).toString('hex')));
        t.is(reader.buffered, 0);
      },
    ),
    { numRuns: 200 },
  );
});

test('FrameReader keeps payloads intact after the chunk buffer is reused', (t) => {
  const reader = new FrameReader();
  const chunk = Buffer.from('000201020003', 'hex');
  const [first] = pushAll(reader, chunk);
  chunk.fill(0xee);
  t.is(first!.toString('hex'), '0102');
});

test('FrameReader hands out one frame at a time and keeps the rest of a chunk unread', (t) => {
  const reader = new FrameReader();
  reader.push(Buffer.from('000104' + '000104' + '0004', 'hex'));
  t.is(reader.next()?.toString('hex'), '04');
  t.is(reader.buffered, 5, 'the second frame and a partial third wait');
  t.is(reader.next()?.toString('hex'), '04');
  t.is(reader.next(), undefined);
  t.is(reader.buffered, 2);
});
