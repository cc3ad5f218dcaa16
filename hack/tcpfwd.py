#!/usr/bin/env python3
"""A TCP forwarder: listen on one address, connect each client to another (stdlib asyncio).

The real nodes live in their own network namespaces and reach the host only through its bridge address;
the API server binds loopback only. This forwards bridge-ip:port -> 127.0.0.1:port, so the API server
itself keeps listening where it did, and only the bridge (the host and the nodes' namespaces) gains a way in.

  tcpfwd.py LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT
"""

from __future__ import annotations

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except OSError:
            pass


async def main(listen_host: str, listen_port: int, target_host: str, target_port: int) -> None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            tr, tw = await asyncio.open_connection(target_host, target_port)
        except OSError:
            w.close()
            return
        await asyncio.gather(_pipe(r, tw), _pipe(tr, w))

    server = await asyncio.start_server(handle, listen_host, listen_port, reuse_address=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    lh, lp, th, tp = sys.argv[1:5]
    asyncio.run(main(lh, int(lp), th, int(tp)))
