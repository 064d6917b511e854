"""A minimal local REST endpoint for poller tests (HTTP/1.1 on loopback, one response per
connection). Each request returns ``per_request`` trades with fresh ids; the first
``fail_first`` requests get a 500. Every request line and header block is kept."""

from __future__ import annotations

import attrs
import orjson
import trio


@attrs.define(eq=False)
class FakeRest:
    per_request: int = 3
    fail_first: int = 0
    port: int = 0
    requests: list[bytes] = attrs.field(factory=list)
    next_id: int = 1

    def url(self, path: str = "/api/v3/trades") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def run(
        self, *, task_status: trio.TaskStatus[FakeRest] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await stream.receive_some()
                if not chunk:
                    return
                head += chunk
            self.requests.append(head)
            if len(self.requests) <= self.fail_first:
                body, status = b'{"error": "try later"}', b"500 Internal Server Error"
            else:
                trades = [
                    {
                        "id": self.next_id + i,
                        "price": f"{100 + i}.25",
                        "qty": "0.5",
                        "time": 1700000000000 + self.next_id + i,
                    }
                    for i in range(self.per_request)
                ]
                self.next_id += self.per_request
                body, status = orjson.dumps(trades), b"200 OK"
            await stream.send_all(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                b"Content-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
