"""An aiohttp app on a free loopback port, served from a thread of its own, for the tests' endpoints.

A subclass adds its routes in `routes(app)`; `on_start` and `on_close` set up and tear down what
its handlers share. Use it as a context manager, or call start() and stop(). `port` 0 takes a free
port; a given port starts a server again where a stopped one was.
"""

from __future__ import annotations

import asyncio
import ssl
import threading

from aiohttp import web


class LocalServer:
    def __init__(self, ssl_context: ssl.SSLContext | None = None, port: int = 0):
        self.ssl_context = ssl_context
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}/v1"

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def on_start(self) -> None:
        pass

    async def on_close(self) -> None:
        pass

    def start(self):
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = self._loop.run_until_complete(self.serve_on(self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self.on_close())
            self._loop.run_until_complete(runner.cleanup())

    async def serve_on(self, port: int) -> web.AppRunner:
        app = web.Application()
        self.routes(app)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        await self.on_start()
        return runner
