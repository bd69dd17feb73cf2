/**
 * Property tests: whatever bytes arrive, the applet answers with a status word,
 * never throws, and a rejected APDU leaves the card state exactly as it was
 * (and every state it saves loads again: MemoryCardStore parses each one).
 */
import test from 'ava';
import fc from 'fast-check';
import { INSTRUCTIONS } from '../../applet/piv_applet.js';
import { makeTestCard, mutualAuthenticate, verifyCommand } from '../helpers/applet_harness.js';

const knownIns = [...INSTRUCTIONS.keys(), 0xc0];

/** Random bytes, and APDU-shaped commands aimed at the real instructions. */
const apduArbitrary = fc.oneof(
  fc.uint8Array({ minLength: 0, maxLength: 300 }),
  fc
    .record({
      cla: fc.constantFrom(0x00, 0x10, 0x80, 0x0c),
      ins: fc.constantFrom(...knownIns),
      p1: fc.oneof(fc.constantFrom(0x00, 0x3f, 0x04, 0xff, 0x07, 0x11, 0x14, 0x03), fc.integer({ min: 0, max: 255 })),
      p2: fc.oneof(fc.constantFrom(0x80, 0x81, 0x9a, 0x9b, 0x9c, 0x9e, 0xff, 0x00), fc.integer({ min: 0, max: 255 })),
      data: fc.oneof(
        fc.uint8Array({ maxLength: 40 }),
        fc.constantFrom(
          Uint8Array.of(0x5c, 0x03, 0x5f, 0xc1, 0x05, 0x53, 0x01, 0x00),
          Uint8Array.of(0x7c, 0x02, 0x80, 0x00),
          Uint8Array.of(0xac, 0x03, 0x80, 0x01, 0x11),
          Uint8Array.of(0x5c, 0x01, 0x7e),
        ),
      ),
      le: fc.option(fc.integer({ min: 0, max: 255 })),
    })
    .map(({ cla, ins, p1, p2, data, le }) =>
      Uint8Array.of(cla, ins, p1, p2, ...(data.length ? [data.length, ...data] : []), ...(le === null ? [] : [le])),
    ),
);

function isRejection(response: Uint8Array): boolean {
  const sw1 = response[response.length - 2]!;
  const sw2 = response[response.length - 1]!;
  return !(sw1 === 0x90 && sw2 === 0x00) && sw1 !== 0x61;
}

for (const authenticated of [false, true]) {
  test(`random APDU sequences never throw and rejected APDUs change nothing (${authenticated ? 'after 9B + PIN' : 'fresh card'})`, async (t) => {
    await fc.assert(
      fc.asyncProperty(fc.array(apduArbitrary, { minLength: 1, maxLength: 25 }), async (commands) => {
        const card = makeTestCard();
        if (authenticated) {
          await mutualAuthenticate(card.send);
          await card.send(verifyCommand('12345678'));
        }
        for (const command of commands) {
          const before = JSON.stringify(card.applet.state);
          const savesBefore = card.store.saved.length;
          const response = await card.applet.transmit(command);
          if (response.length < 2) return false;
          if (isRejection(response)) {
            if (JSON.stringify(card.applet.state) !== before) return false;
            // a rejected APDU may only re-save the same card state with the vault's own state moved
            if (card.store.saved.length !== savesBefore) {
              const { vault: _saved, ...savedCard } = JSON.parse(card.store.last!);
              const { vault: _before, ...beforeCard } = JSON.parse(before);
              if (JSON.stringify(savedCard) !== JSON.stringify(beforeCard)) return false;
            }
          } else if (card.store.saved.length > savesBefore) {
            if (card.store.last !== JSON.stringify(card.applet.state)) return false;
          }
        }
        return true;
      }),
      { numRuns: 150 },
    );
    t.pass();
  });
}

test('truncations of a valid APDU never throw and never change state', async (t) => {
  const card = makeTestCard();
  await mutualAuthenticate(card.send);
  const full = Uint8Array.from(Buffer.from('00db3fff0a5c035fc10553037001aa', 'hex'));
  const before = JSON.stringify(card.applet.state);
  for (let length = 0; length < full.length; length++) {
    const response = await card.applet.transmit(full.subarray(0, length));
    t.true(response.length >= 2);
    t.not(Buffer.from(response).toString('hex'), '9000');
  }
  t.is(JSON.stringify(card.applet.state), before);
});
