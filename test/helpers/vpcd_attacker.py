#!/usr/bin/python3
"""An unprivileged local user attacking the vpcd reader ports (issue #12), for
test/e2e/vpcd_guard_attacks.test.ts. Run as nobody (setpriv); prints "started" once armed, then one JSON object when done.

  connect ADDRS PORTS   be the card: connect to every ADDR:PORT again and again until stdin
                        closes; on a connection, answer vpcd as a card would (ATR, 9000 to
                        every APDU) and keep the data of every VERIFY (the owner's PIN)
  listen SPECS          be vpcd: bind and listen on every ADDR:PORT of SPECS until stdin
                        closes; on a connection (the daemon), power the card on and send it
                        SELECT PIV and VERIFY, as a PC/SC client would through vpcd
  knock READER          knock a card out of its reader: a 1-byte APDU through pcscd (pyscard)

vpcd frames, both directions: u16 big-endian length, then the payload. A 1-byte payload from
vpcd is a control byte: 00 power off, 01 power on, 02 reset, 04 get ATR (answered with the ATR).
"""
import errno
import json
import socket
import struct
import sys
import threading
import time

# A PIV card's ATR as a real client would accept it (the daemon's card uses its own).
FAKE_ATR = bytes.fromhex('3bf81300008131fe15597562696b657934d4')
SELECT_PIV = bytes.fromhex('00a4040009a00000030800001000')
# VERIFY with a guessed PIN: what an impersonated vpcd would try.
VERIFY_GUESS = bytes.fromhex('002000800831323334353637ff')

stop = threading.Event()
lock = threading.Lock()


def wait_for_stdin_close():
    sys.stdin.read()
    stop.set()


def read_exact(sock, count, mid_frame=False):
    """count bytes. A timeout mid-frame waits on with what arrived: vpcd may send a frame's
    length and payload apart, and dropping the half read would shift every later frame."""
    data = b''
    while len(data) < count:
        try:
            chunk = sock.recv(count - len(data))
        except socket.timeout:
            if (mid_frame or data) and not stop.is_set():
                continue
            raise
        if not chunk:
            raise ConnectionError('closed')
        data += chunk
    return data


def read_frame(sock):
    (length,) = struct.unpack('>H', read_exact(sock, 2))
    return read_exact(sock, length, mid_frame=True)


def send_frame(sock, payload):
    sock.sendall(struct.pack('>H', len(payload)) + payload)


def play_card(sock, peer, report):
    """The card's side of vpcd: whatever vpcd forwards, answered; VERIFY data kept."""
    sock.settimeout(0.5)
    while not stop.is_set():
        try:
            frame = read_frame(sock)
        except socket.timeout:
            continue
        except (OSError, ConnectionError):
            return
        with lock:
            report['frames'] += 1
        if len(frame) == 1:
            if frame[0] == 0x04:
                send_frame(sock, FAKE_ATR)
            continue
        if len(frame) >= 4 and frame[1] == 0x20:
            with lock:
                report['verify'].append({'peer': peer, 'data': frame[5:].hex()})
        send_frame(sock, b'\x90\x00')


def connect_mode(addresses, ports):
    report = {'mode': 'connect', 'attempts': {}, 'connected': [], 'frames': 0, 'verify': []}
    held = []
    print('started', flush=True)
    first_round = True
    while first_round or not stop.is_set():
        first_round = False
        for address in addresses:
            for port in ports:
                key = f'{address}:{port}'
                outcome = report['attempts'].setdefault(key, {})
                family = socket.AF_INET6 if ':' in address else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.settimeout(1.0)
                try:
                    sock.connect((address, port))
                except socket.timeout:
                    result = 'timeout'
                except OSError as error:
                    result = errno.errorcode.get(error.errno, str(error.errno))
                else:
                    result = 'connected'
                    if key not in report['connected']:
                        report['connected'].append(key)
                    held.append(sock)
                    threading.Thread(target=play_card, args=(sock, key, report), daemon=True).start()
                outcome[result] = outcome.get(result, 0) + 1
                if result != 'connected':
                    sock.close()
        stop.wait(0.01)
    time.sleep(0.6)
    for sock in held:
        sock.close()
    return report


def play_vpcd(sock, peer, report):
    """vpcd's side: power the card on, then what a client would send."""
    sock.settimeout(2.0)
    try:
        for payload in (b'\x04', b'\x01', b'\x04', SELECT_PIV, VERIFY_GUESS):
            send_frame(sock, payload)
            if len(payload) == 1 and payload != b'\x04':
                continue
            answer = read_frame(sock)
            with lock:
                report['received'].append({'peer': peer, 'sent': payload.hex(), 'answer': answer.hex()})
    except (OSError, ConnectionError):
        pass


def listen_mode(specs):
    report = {'mode': 'listen', 'bound': {}, 'accepted': [], 'received': []}
    servers = []
    for spec in specs:
        address, port = spec.rsplit(':', 1)
        family = socket.AF_INET6 if ':' in address else socket.AF_INET
        server = socket.socket(family, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # Dual stack: [::] also takes the IPv4 connects the daemon makes.
            server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            server.bind((address, int(port)))
            server.listen(8)
        except OSError as error:
            report['bound'][spec] = errno.errorcode.get(error.errno, str(error.errno))
            server.close()
            continue
        report['bound'][spec] = 'listening'
        server.settimeout(0.2)
        servers.append((spec, server))
    print('started', flush=True)
    while not stop.is_set() and servers:
        for spec, server in servers:
            try:
                connection, peer = server.accept()
            except socket.timeout:
                continue
            report['accepted'].append({'spec': spec, 'peer': f'{peer[0]}:{peer[1]}'})
            threading.Thread(target=play_vpcd, args=(connection, spec, report), daemon=True).start()
    stop.wait()
    time.sleep(0.3)
    for _, server in servers:
        server.close()
    return report


def knock_mode(reader_name):
    from smartcard.System import readers
    report = {'mode': 'knock', 'reader': reader_name}
    try:
        reader = next(r for r in readers() if str(r) == reader_name)
        connection = reader.createConnection()
        connection.connect()
        started = time.monotonic()
        try:
            data, sw1, sw2 = connection.transmit([0x00])
            report['answer'] = bytes(data + [sw1, sw2]).hex()
        except Exception as error:  # pyscard raises its own exception types
            report['error'] = str(error)
        report['ms'] = round((time.monotonic() - started) * 1000)
        try:
            connection.disconnect()
        except Exception:
            pass
    except Exception as error:
        report['error'] = f'{type(error).__name__}: {error}'
    return report


def main():
    mode = sys.argv[1]
    if mode == 'knock':
        report = knock_mode(sys.argv[2])
    else:
        threading.Thread(target=wait_for_stdin_close, daemon=True).start()
        if mode == 'connect':
            report = connect_mode(sys.argv[2].split(','), [int(p) for p in sys.argv[3].split(',')])
        elif mode == 'listen':
            report = listen_mode(sys.argv[2].split(','))
        else:
            raise SystemExit(f'unknown mode {mode}')
    with lock:
        print(json.dumps(report), flush=True)


if __name__ == '__main__':
    main()
