"""Python's own asyncio as an independent peer for aioloop's stream tests.

Usage (run by tests/python_peers.rs; exit status 0 means every check passed):

    peer.py client tcp HOST PORT SIZE CHUNK
    peer.py client unix PATH SIZE CHUNK
        Connects, sends SIZE patterned bytes in CHUNK-byte writes (awaiting
        drain() after each), then write_eof(); meanwhile reads until EOF and
        checks that exactly the bytes sent came back, byte for byte. Prints
        "ok: echoed SIZE bytes".

    peer.py server tcp HOST
    peer.py server unix PATH
        Listens (TCP on an ephemeral port), prints "port N" (TCP) or
        "ready" (Unix) on stdout, flushed, then echoes every byte of ONE
        connection with a low-level Protocol (pausing reading while its
        transport's write buffer is above the high-water mark), closes when
        the peer half-closes, and exits after that connection is lost,
        printing "ok: echoed N bytes".

Patterned bytes: byte i of the stream is i % 251 (251 is prime, so the
pattern does not line up with power-of-two chunk boundaries; a lost,
duplicated or reordered chunk shows up as a mismatch).
"""

import asyncio
import sys


def pattern(size):
    block = bytes(range(251))
    return (block * (size // 251 + 1))[:size]


def first_mismatch(got, want):
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return i
    return min(len(got), len(want))


async def client(kind, address, size, chunk):
    if kind == "tcp":
        host, port = address
        reader, writer = await asyncio.open_connection(host, port)
    else:
        reader, writer = await asyncio.open_unix_connection(address)
    data = pattern(size)

    async def send():
        for start in range(0, size, chunk):
            writer.write(data[start:start + chunk])
            await writer.drain()
        writer.write_eof()

    sender = asyncio.ensure_future(send())
    got = await reader.read()  # until EOF
    await sender
    writer.close()
    await writer.wait_closed()
    if got != data:
        i = first_mismatch(got, data)
        print(f"peer.py client: echo mismatch: got {len(got)} bytes, "
              f"sent {size}; first difference at byte {i}", file=sys.stderr)
        return 1
    print(f"ok: echoed {size} bytes", flush=True)
    return 0


class Echo(asyncio.Protocol):
    def __init__(self, done):
        self.done = done
        self.transport = None
        self.count = 0

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.count += len(data)
        self.transport.write(data)

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()

    def eof_received(self):
        return False  # the transport closes once its buffer is flushed

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result((self.count, exc))


async def server(kind, address):
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    connections = []

    def factory():
        if connections:
            raise RuntimeError("peer.py server: a second connection")
        connections.append(1)
        return Echo(done)

    if kind == "tcp":
        srv = await loop.create_server(factory, address, 0)
        port = srv.sockets[0].getsockname()[1]
        print(f"port {port}", flush=True)
    else:
        srv = await loop.create_unix_server(factory, address)
        print("ready", flush=True)
    count, exc = await done
    srv.close()
    await srv.wait_closed()
    if exc is not None:
        print(f"peer.py server: connection lost with {exc!r}", file=sys.stderr)
        return 1
    print(f"ok: echoed {count} bytes", flush=True)
    return 0


def main(argv):
    try:
        role, kind = argv[1], argv[2]
        if role == "client" and kind == "tcp":
            coro = client(kind, (argv[3], int(argv[4])), int(argv[5]), int(argv[6]))
        elif role == "client" and kind == "unix":
            coro = client(kind, argv[3], int(argv[4]), int(argv[5]))
        elif role == "server" and kind in ("tcp", "unix"):
            coro = server(kind, argv[3])
        else:
            raise ValueError(f"unknown mode {role} {kind}")
    except (IndexError, ValueError) as e:
        print(f"usage: see the docstring of {argv[0]} ({e})", file=sys.stderr)
        return 2
    return asyncio.run(coro)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
