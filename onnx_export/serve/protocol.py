"""uvicorn's h11 protocol with a deadline for the request head.

uvicorn times out idle keep-alive connections but not a client that connects and then sends its
headers slowly or never (slowloris): each such connection would hold a slot forever. Here the first
request head must be complete within `header_timeout_s` of connecting, else the connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def header_timeout_protocol(header_timeout_s: float) -> type[H11Protocol]:
    """A protocol class for `uvicorn.run(http=...)` that drops clients slower than the deadline."""

    class HeaderTimeoutH11Protocol(H11Protocol):
        _head_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._head_deadline = self.loop.call_later(header_timeout_s, self._head_timeout)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._head_deadline is not None and self.conn.their_state is not h11.IDLE:
                self._head_deadline.cancel()  # the head is complete: body timeouts are the app's
                self._head_deadline = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
            super().connection_lost(exc)

        def _head_timeout(self) -> None:
            self._head_deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutH11Protocol
