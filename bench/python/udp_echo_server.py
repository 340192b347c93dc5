"""asyncio / uvloop DatagramProtocol echo server for `cargo xtask bench net`
(the `udp_1k_x10` case).

    python udp_echo_server.py [--uvloop] [--addr 127.0.0.1:0]

Prints ``listening on PORT`` (flushed), then sends every datagram back to
its sender (``datagram_received`` -> ``transport.sendto(data, addr)``) until
stdin reaches end-of-file.
"""

import argparse
import asyncio
import os
import sys


class EchoUDP(asyncio.DatagramProtocol):
    __slots__ = ("transport",)

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


async def main(host, port):
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(EchoUDP, local_addr=(host, port))
    port = transport.get_extra_info("sockname")[1]
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
    transport.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--addr", default="127.0.0.1:0")
    args = parser.parse_args()
    host, _, port = args.addr.rpartition(":")
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
    sys.stdout.flush()
    os._exit(0)
