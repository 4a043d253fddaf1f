"""A TCP proxy for the client tests that breaks a connection on purpose: "the connection
broke mid-upload / mid-download" (test_files, test_backup) is a real cut socket between a
real client and a real relay, not a mocked exception."""

from __future__ import annotations

import asyncio


class FlakyProxy:
    """Forwards TCP to the relay; ``cut(up=N)`` / ``cut(down=N)`` aborts the next
    connection that carries more than N bytes in that direction (one shot)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cut_up: int | None = None
        self.cut_down: int | None = None
        self.cuts = 0
        self.server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FlakyProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for w in self._writers:
            w.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        ur, uw = await asyncio.open_connection("127.0.0.1", self.port)
        self._writers += [w, uw]

        def kill() -> None:
            w.transport.abort()
            uw.transport.abort()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            n = 0
            try:
                while data := await src.read(65536):
                    limit = self.cut_up if up else self.cut_down
                    if limit is not None and n + len(data) > limit:
                        dst.write(data[: limit - n])
                        await dst.drain()
                        if up:
                            self.cut_up = None
                        else:
                            self.cut_down = None
                        self.cuts += 1
                        kill()
                        return
                    n += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            kill()

        await asyncio.gather(pipe(r, uw, True), pipe(ur, w, False))
