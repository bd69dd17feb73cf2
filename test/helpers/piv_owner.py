#!/usr/bin/python3
"""The card owner, through pyscard (test/e2e/vpcd_guard_attacks.test.ts): waits for the card in
READER, logs in with the PIN read from stdin (never from argv) and signs a SHA-256 digest with
the ECC P-256 key in slot 9A. Prints one JSON object: the VERIFY status word, the signature and
how many times it connected (more than once when the card left its reader after a connect).

  piv_owner.py READER DIGEST_HEX [WAIT_SECONDS]
"""
import json
import sys
import time

from smartcard.System import readers
from smartcard.Exceptions import CardConnectionException, NoCardException

SELECT_PIV = [0x00, 0xA4, 0x04, 0x00, 0x09, 0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x00]


def transmit(connection, apdu):
    data, sw1, sw2 = connection.transmit(apdu)
    while sw1 == 0x61:  # more data: GET RESPONSE
        more, sw1, sw2 = connection.transmit([0x00, 0xC0, 0x00, 0x00, sw2])
        data += more
    return bytes(data), (sw1 << 8) | sw2


def signature_of(answer):
    """7C L { 82 L <DER signature> }, lengths short or 81-prefixed; None when the answer is not that."""
    try:
        index = 2 if answer[1] < 0x80 else 3
        if answer[0] != 0x7C or answer[index] != 0x82:
            return None
        length, start = answer[index + 1], index + 2
        if length == 0x81:
            length, start = answer[index + 2], start + 1
        return answer[start:start + length].hex()
    except IndexError:
        return None


def connect(reader_name, wait_seconds):
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            reader = next(r for r in readers() if str(r) == reader_name)
            connection = reader.createConnection()
            connection.connect()
            return connection
        except (StopIteration, NoCardException, CardConnectionException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def release(connection):
    try:
        connection.disconnect()
    except CardConnectionException:
        pass  # the handle is gone already: nothing left to let go of


def main():
    reader_name, digest_hex = sys.argv[1], sys.argv[2]
    wait_seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 20
    pin = sys.stdin.readline().rstrip('\n').encode()
    report = {}
    started = time.monotonic()
    deadline = started + wait_seconds
    report['connects'] = 0
    while True:
        connection = connect(reader_name, max(deadline - time.monotonic(), 0))
        report['connects'] += 1
        try:
            _, sw = transmit(connection, SELECT_PIV)
            break
        except CardConnectionException:
            # The card left its reader after we connected (pcscd had not noticed yet): as an
            # application would, connect again to whatever card the reader holds now. Let go of
            # the dead handle FIRST: pyscard disconnects with SCARD_UNPOWER_CARD, and if that
            # happened (when the garbage collector gets to it) after the new connect, pcscd would
            # mark the new handle reset and fail its transmit with "Card was reset", every time.
            release(connection)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    report['waitedMs'] = round((time.monotonic() - started) * 1000)
    report['select'] = f'{sw:04x}'
    padded = pin + b'\xff' * (8 - len(pin))
    _, sw = transmit(connection, [0x00, 0x20, 0x00, 0x80, 0x08] + list(padded))
    report['verify'] = f'{sw:04x}'
    digest = bytes.fromhex(digest_hex)
    # GENERAL AUTHENTICATE, ECC P-256 (11), slot 9A: 7C { 82 00 (response wanted), 81 <digest> (challenge) }
    template = bytes([0x82, 0x00, 0x81, len(digest)]) + digest
    command = bytes([0x7C, len(template)]) + template
    answer, sw = transmit(connection, [0x00, 0x87, 0x11, 0x9A, len(command)] + list(command) + [0x00])
    report['sign'] = f'{sw:04x}'
    report['signature'] = signature_of(answer) if sw == 0x9000 else None
    connection.disconnect()
    print(json.dumps(report), flush=True)


if __name__ == '__main__':
    main()
