"""Python's asyncio and ssl module as an independent TLS peer of aioloop.

Usage (run by tests/tls_peers.rs; exit status 0 means every check passed):

    tls_peer.py server CHAIN KEY
        Listens on 127.0.0.1 (an ephemeral port) with TLS, prints "port N"
        on stdout, flushed, echoes every byte of ONE connection with a
        low-level Protocol (pausing reading while its transport's write
        buffer is above the high-water mark), closes when the peer closes
        (its close_notify), and exits after the connection is lost, printing
        "ok: echoed N bytes".

    tls_peer.py sink CHAIN KEY OUT
        Listens as `server` does, prints "port N", and writes every byte of
        ONE connection to the file OUT (sending nothing); closes when the
        peer closes (its close_notify) and exits after the connection is
        lost, printing "ok: received N bytes over TLSv1.x".

    tls_peer.py client PORT CAFILE SIZE CHUNK
        Connects to 127.0.0.1:PORT with TLS, trusting CAFILE and checking the
        name "localhost"; sends SIZE patterned bytes in CHUNK-byte writes
        (awaiting drain() after each) while reading; once SIZE bytes came
        back, checks them byte for byte, closes, and prints
        "ok: echoed SIZE bytes over TLSv1.x".

Patterned bytes: byte i of the stream is i % 251.
"""

import asyncio
import ssl
import sys


def pattern(size):
    block = bytes(range(251))
    return (block * (size // 251 + 1))[:size]


async def client(port, cafile, size, chunk):
    ctx = ssl.create_default_context(cafile=cafile)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost")
    data = pattern(size)

    async def send():
        for start in range(0, size, chunk):
            writer.write(data[start:start + chunk])
            await writer.drain()

    sender = asyncio.ensure_future(send())
    got = await reader.readexactly(size)
    await sender
    version = writer.get_extra_info("ssl_object").version()
    writer.close()
    await writer.wait_closed()
    if got != data:
        print("tls_peer.py client: echo mismatch", file=sys.stderr)
        return 1
    print(f"ok: echoed {size} bytes over {version}", flush=True)
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
        return False

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result((self.count, exc))


async def server(chain, key):
    loop = asyncio.get_running_loop()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(chain, key)
    done = loop.create_future()
    srv = await loop.create_server(lambda: Echo(done), "127.0.0.1", 0, ssl=ctx)
    print(f"port {srv.sockets[0].getsockname()[1]}", flush=True)
    count, exc = await done
    srv.close()
    await srv.wait_closed()
    if exc is not None:
        print(f"tls_peer.py server: connection lost with {exc!r}", file=sys.stderr)
        return 1
    print(f"ok: echoed {count} bytes", flush=True)
    return 0


class Sink(asyncio.Protocol):
    def __init__(self, done, out):
        self.done = done
        self.out = out
        self.transport = None
        self.count = 0
        self.version = None

    def connection_made(self, transport):
        self.transport = transport
        self.version = transport.get_extra_info("ssl_object").version()

    def data_received(self, data):
        self.count += len(data)
        self.out.write(data)

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result((self.count, self.version, exc))


async def sink(chain, key, path):
    loop = asyncio.get_running_loop()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(chain, key)
    done = loop.create_future()
    with open(path, "wb") as out:
        srv = await loop.create_server(
            lambda: Sink(done, out), "127.0.0.1", 0, ssl=ctx)
        print(f"port {srv.sockets[0].getsockname()[1]}", flush=True)
        count, version, exc = await done
        srv.close()
        await srv.wait_closed()
    if exc is not None:
        print(f"tls_peer.py sink: connection lost with {exc!r}", file=sys.stderr)
        return 1
    print(f"ok: received {count} bytes over {version}", flush=True)
    return 0


def main(argv):
    try:
        if argv[1] == "server":
            coro = server(argv[2], argv[3])
        elif argv[1] == "sink":
            coro = sink(argv[2], argv[3], argv[4])
        elif argv[1] == "client":
            coro = client(int(argv[2]), argv[3], int(argv[4]), int(argv[5]))
        else:
            raise ValueError(f"unknown mode {argv[1]}")
    except (IndexError, ValueError) as e:
        print(f"usage: see the docstring of {argv[0]} ({e})", file=sys.stderr)
        return 2
    return asyncio.run(coro)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
