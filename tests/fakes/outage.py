"""An outside server that is down in each of the ways a real one is, on one fixed loopback port.

`OutageProxy` listens on a port of its own and stands in front of a real upstream (a Dovecot, a
fake Atlas, a fake Telegram or model API). Its mode says how the outside world behaves:

- `refused`: nothing listens on the port (the listener is closed: connect gets ECONNREFUSED);
- `hanging`: it accepts the connection and never says a word;
- `slow`: it accepts and passes the conversation on only after `slow_seconds` (20 s by default);
- `up`: it passes everything on at once.

Switching to `up` is "the server comes back on the same port". Connections accepted in another
mode stay as they were (a hung one stays hung), as with a real server that was restarted.
A thread of its own runs it, so that synchronous end-to-end tests can use it as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import Literal

Mode = Literal["refused", "hanging", "slow", "up"]


class OutageProxy:
    def __init__(self, upstream_port: int, *, mode: Mode = "up", slow_seconds: float = 20.0) -> None:
        self.upstream_port = upstream_port
        self.slow_seconds = slow_seconds
        self.accepted = 0
        self._mode: Mode = mode
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="outage-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port: int = probe.getsockname()[1]
        probe.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OutageProxy:
        self._thread.start()
        self.set_mode(self._mode)
        return self

    def set_mode(self, mode: Mode) -> None:
        asyncio.run_coroutine_threadsafe(self._set_mode(mode), self._loop).result(timeout=10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _set_mode(self, mode: Mode) -> None:
        self._mode = mode
        if mode == "refused":
            await self._close_listener()
        elif self._server is None:
            self._server = await asyncio.start_server(
                self._accept, "127.0.0.1", self.port, reuse_address=True
            )

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _shutdown(self) -> None:
        await self._close_listener()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            mode = self._mode
            if mode == "hanging":
                await asyncio.Event().wait()  # until the proxy stops: a server that never speaks
            if mode == "slow":
                await asyncio.sleep(self.slow_seconds)  # the outage under test: a server this slow
            await self._pipe(reader, writer)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            with contextlib.suppress(OSError):
                writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def copy(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    target.write(data)
                    await target.drain()
            with contextlib.suppress(OSError):
                target.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
