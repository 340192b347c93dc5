"""asyncio / uvloop Protocol echo server for `cargo xtask bench net`.

    python echo_server.py [--uvloop] [--addr 127.0.0.1:0]

Prints ``listening on PORT`` (flushed), then echoes every byte back
(``data_received`` -> ``transport.write(data)``, asyncio's canonical echo
protocol, as uvloop's ``examples/bench/echoserver.py --proto``) until stdin
reaches end-of-file. Sets TCP_NODELAY on every connection and raises the
soft RLIMIT_NOFILE to the hard limit.
"""

import argparse
import asyncio
import os
import resource
import socket
import sys


class Echo(asyncio.Protocol):
    __slots__ = ("transport",)

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        self.transport = None


def raise_nofile_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


async def main(host, port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, host, port)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"listening on {port}\n")
    sys.stdout.flush()

    done = loop.create_future()

    def on_stdin():
        try:
            chunk = os.read(0, 4096)
        except OSError:
            chunk = b""
        if not chunk and not done.done():
            loop.remove_reader(0)
            done.set_result(None)

    loop.add_reader(0, on_stdin)
    await done
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--addr", default="127.0.0.1:0")
    args = parser.parse_args()
    host, _, port = args.addr.rpartition(":")
    raise_nofile_limit()
    try:
        if args.uvloop:
            import uvloop

            if hasattr(uvloop, "run"):
                uvloop.run(main(host, int(port)))
            else:
                uvloop.install()
                asyncio.run(main(host, int(port)))
        else:
            asyncio.run(main(host, int(port)))
    except KeyboardInterrupt:
        pass
    # Do not wait for the clients' connections to wind down.
    sys.stdout.flush()
    os._exit(0)
