"""1,000 concurrent GET streams on gevent.pywsgi, one broadcast of 20 notifications.

The server (the example app, monkey-patched) runs in its own process; the
clients are asyncio raw sockets in this one. Every stream must receive
every notification exactly once, in order; clients that hang up must be
unregistered. Everything is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import requests

from .flask_support import (
    ACCEPT_BOTH,
    LATEST,
    PYTHON,
    ChunkedDecoder,
    Head,
    ServerProcess,
    build_request,
    free_port,
    initialize_message,
    wait_until,
)
from .sse_parser import SSEParser

STREAMS = 1000
NOTIFICATIONS = 20
SETUP_CONCURRENCY = 100

pytestmark = pytest.mark.slow


class StreamClient:
    """One session over one keep-alive connection: initialize, then its GET stream."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sid = ""
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter
        self.decoder = ChunkedDecoder()
        self.parser = SSEParser()
        self.received: list[dict[str, object]] = []

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        body = json.dumps(initialize_message()).encode()
        headers = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH}
        self.writer.write(build_request("POST", "/mcp", self.port, headers, body))
        head = Head((await self.reader.readuntil(b"\r\n\r\n"))[:-4])
        assert head.status == 200 and head.length is not None, head.headers
        await self.reader.readexactly(head.length)
        self.sid = head.headers["mcp-session-id"]
        headers = {"Accept": "text/event-stream", "Mcp-Session-Id": self.sid, "MCP-Protocol-Version": LATEST}
        self.writer.write(build_request("GET", "/mcp", self.port, headers))
        head = Head((await self.reader.readuntil(b"\r\n\r\n"))[:-4])
        # The stream is registered before its headers leave the server.
        assert head.status == 200 and head.chunked and head.headers["content-type"] == "text/event-stream", head.headers

    async def collect(self, count: int) -> None:
        while len(self.received) < count:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError(f"stream ended after {len(self.received)} events")
            for event in self.parser.feed(self.decoder.feed(data)):
                self.received.append(json.loads(event.data))

    def close(self) -> None:
        self.writer.close()


async def open_all(port: int) -> list[StreamClient]:
    clients = [StreamClient(port) for _ in range(STREAMS)]
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def open_one(client: StreamClient) -> None:
        async with gate:
            await client.open()

    await asyncio.wait_for(asyncio.gather(*(open_one(c) for c in clients)), timeout=120)
    return clients


def admin(server: ServerProcess, method: str, path: str) -> dict[str, int]:
    response = requests.request(method, f"http://127.0.0.1:{server.port}{path}", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("server_option", [[], ["--parking"]], ids=["pywsgi", "parking"])
def test_a_broadcast_reaches_1000_gevent_streams_exactly_once_in_order(server_option: list[str]) -> None:
    port = free_port()
    command = [PYTHON, "-m", "tests.flask_gevent_server", "--port", str(port), "--keepalive", "0.5", *server_option]
    server = ServerProcess(command, port)
    try:
        asyncio.run(asyncio.wait_for(scenario(server), timeout=240))
    finally:
        server.close()
    assert "Traceback" not in server.stderr(), server.stderr()


async def scenario(server: ServerProcess) -> None:
    clients = await open_all(server.port)
    assert len({c.sid for c in clients}) == STREAMS
    loop = asyncio.get_running_loop()
    assert (await loop.run_in_executor(None, admin, server, "GET", "/admin/streams")) == {"open": STREAMS}

    readers = [asyncio.ensure_future(c.collect(NOTIFICATIONS)) for c in clients]
    assert (await loop.run_in_executor(None, admin, server, "POST", f"/admin/broadcast?count={NOTIFICATIONS}")) == {
        "sent": NOTIFICATIONS
    }
    await asyncio.wait_for(asyncio.gather(*readers), timeout=120)

    expected: list[tuple[str, int]] = [("notifications/test", seq) for seq in range(NOTIFICATIONS)]
    for client in clients:
        got = [(m["method"], m["params"]["seq"]) for m in client.received]  # type: ignore[index]
        assert got == expected, (client.sid, got)

    # Clients that hang up are unregistered (the next keep-alive ping fails).
    gone, staying = clients[:100], clients[100:]
    for client in gone:
        client.close()

    def streams_left() -> int:
        return admin(server, "GET", "/admin/streams")["open"]

    await loop.run_in_executor(
        None, lambda: wait_until(lambda: streams_left() == STREAMS - 100, timeout=30, what="gone clients to be unregistered")
    )
    for client in staying:
        client.close()
