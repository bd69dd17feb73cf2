"""A fake vpcd driver for tests: listens on loopback and reads its connections exactly as
vpcd does, recv(MSG_WAITALL) of a 2-byte length and then of that many bytes, and only when
told to read a reply. Bytes nobody asked for stay in the kernel's receive queue, as they
would in pcscd's. Driven by fake_vpcd.ts over stdin/stdout, one command per line:

  <id> send <conn> <hex>        write raw bytes                 -> <id> ok
  <id> reply <conn> <ms>        read one reply frame             -> <id> reply <hex> | <id> eof | <id> timeout
  <id> pending <conn>           unread bytes, without reading    -> <id> pending <hex>
  <id> eof <conn> <ms>          read and drop until the peer closes -> <id> eof | <id> timeout
  <id> close <conn>             close the connection             -> <id> ok
Every accepted connection is announced as `accepted <conn>`. Commands run in their own
threads: a reply may be awaited while bytes are sent.
"""
import select
import socket
import sys
import threading

lock = threading.Lock()
connections = []


def say(line):
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def recv_exact(sock, size, deadline_s):
    data = b""
    while len(data) < size:
        ready, _, _ = select.select([sock], [], [], deadline_s)
        if not ready:
            return None
        chunk = sock.recv(size - len(data), socket.MSG_WAITALL)
        if not chunk:
            return b"" if not data else None
        data += chunk
    return data


def run(line):
    parts = line.split()
    ident, verb, conn = parts[0], parts[1], connections[int(parts[2])]
    try:
        if verb == "send":
            conn.sendall(bytes.fromhex(parts[3]))
            say(f"{ident} ok")
        elif verb == "reply":
            seconds = int(parts[3]) / 1000
            head = recv_exact(conn, 2, seconds)
            if head is None:
                say(f"{ident} timeout")
                return
            if head == b"":
                say(f"{ident} eof")
                return
            size = int.from_bytes(head, "big")
            body = recv_exact(conn, size, seconds) if size else b""
            say(f"{ident} eof" if body is None or len(body) != size else f"{ident} reply {body.hex()}")
        elif verb == "pending":
            try:
                data = conn.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                data = b""
            say(f"{ident} pending {data.hex()}")
        elif verb == "eof":
            seconds = int(parts[3]) / 1000
            while True:
                ready, _, _ = select.select([conn], [], [], seconds)
                if not ready:
                    say(f"{ident} timeout")
                    return
                if not conn.recv(65536):
                    say(f"{ident} eof")
                    return
        elif verb == "close":
            conn.close()
            say(f"{ident} ok")
    except OSError:
        say(f"{ident} eof")


def accept_loop(server):
    while True:
        conn, _ = server.accept()
        with lock:
            connections.append(conn)
            index = len(connections) - 1
        say(f"accepted {index}")


def main():
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0))
    server.listen(0)
    say(f"port {server.getsockname()[1]}")
    threading.Thread(target=accept_loop, args=(server,), daemon=True).start()
    for line in sys.stdin:
        if line.strip():
            threading.Thread(target=run, args=(line.strip(),), daemon=True).start()


main()
