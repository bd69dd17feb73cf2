"""Sends raw APDUs to one reader through libpcsclite (ctypes), exactly as given: a 1-byte
APDU is one byte, an empty argument a zero-length APDU (a real buffer, length 0, which
pcsc-lite passes to the driver). For attack tests, run as an unprivileged uid:

  setpriv --reuid=nobody --regid=nogroup --clear-groups /usr/bin/python3 pcsc_transmit.py READER HEX...

Prints one JSON line per APDU: {"apdu": hex, "rv": pcsc-lite return code, "response": hex}.
Connects shared, T=0 or T=1, and never sends anything else.
"""
import ctypes
import json
import sys

lib = ctypes.CDLL("libpcsclite.so.1")
# pcsc-lite on Linux x86-64: LONG = long, DWORD = unsigned long, handles are long.
SCARD_SCOPE_SYSTEM = 2
SCARD_SHARE_SHARED = 2
SCARD_PROTOCOL_ANY = 3
SCARD_LEAVE_CARD = 0


class IoRequest(ctypes.Structure):
    _fields_ = [("dwProtocol", ctypes.c_ulong), ("cbPciLength", ctypes.c_ulong)]


def check(name, rv):
    if rv != 0:
        print(json.dumps({"call": name, "rv": rv & 0xFFFFFFFF}), flush=True)
        sys.exit(1)


def main():
    reader = sys.argv[1].encode()
    context = ctypes.c_long()
    check("SCardEstablishContext", lib.SCardEstablishContext(SCARD_SCOPE_SYSTEM, None, None, ctypes.byref(context)))
    card = ctypes.c_long()
    protocol = ctypes.c_ulong()
    check("SCardConnect", lib.SCardConnect(context, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY, ctypes.byref(card), ctypes.byref(protocol)))
    pci = IoRequest(protocol.value, ctypes.sizeof(IoRequest))
    for text in sys.argv[2:]:
        apdu = bytes.fromhex(text)
        send = ctypes.create_string_buffer(apdu, max(1, len(apdu)))
        receive = ctypes.create_string_buffer(65538)
        length = ctypes.c_ulong(len(receive))
        rv = lib.SCardTransmit(card, ctypes.byref(pci), send, ctypes.c_ulong(len(apdu)), None, receive, ctypes.byref(length))
        response = receive.raw[: length.value] if rv == 0 else b""
        print(json.dumps({"apdu": text, "rv": rv & 0xFFFFFFFF, "response": response.hex()}), flush=True)
    lib.SCardDisconnect(card, SCARD_LEAVE_CARD)
    lib.SCardReleaseContext(context)


main()
