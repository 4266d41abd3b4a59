"""A fault-injecting HTTP proxy for tests, in front of a real OpenAI-compatible server.

Generation requests (POST) are forwarded to the upstream server, except that a configurable share
of them gets a fault instead: 429 with Retry-After, 500, 503, a dropped connection, a stall past the
client's timeout, a truncated or an invalid JSON body, a 200 answer with no choices, an HTML page
with status 200, or an answer whose text is null (a chat choice without its message). The rate and
the kinds can be changed while it runs; `injected` counts what it did.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter

from aiohttp import ClientSession, ClientTimeout, web
from local_server import LocalServer

KINDS = (
    "429",
    "500",
    "503",
    "drop",
    "stall",
    "truncated",
    "invalid_json",
    "empty_choices",
    "html",
    "null_text",
)


class FaultProxy(LocalServer):
    def __init__(self, upstream: str, rate: float = 0.2, kinds=KINDS, stall_seconds: float = 10.0, seed=0):
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.rate = rate
        self.kinds = tuple(kinds)
        self.stall_seconds = stall_seconds
        self.injected: Counter[str] = Counter()
        self.forwarded = 0
        self._rng = random.Random(seed)

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{path:.*}", self._handle)

    async def on_start(self) -> None:
        self._session = ClientSession(timeout=ClientTimeout(total=600))

    async def on_close(self) -> None:
        await self._session.close()

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, bytes, str]:
        url = (
            self.upstream
            + request.path.removeprefix("/v1")
            + (f"?{request.query_string}" if request.query_string else "")
        )
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization")}
        async with self._session.request(request.method, url, data=body, headers=headers) as r:
            self.forwarded += 1
            return r.status, await r.read(), r.headers.get("content-type", "application/json")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        kind = None
        if request.method == "POST" and self._rng.random() < self.rate:
            kind = self._rng.choice(self.kinds)
            self.injected[kind] += 1
        if kind == "429":
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "1"})
        if kind in ("500", "503"):
            return web.json_response({"error": f"injected {kind}"}, status=int(kind))
        if kind == "drop":
            request.transport.abort()
            raise asyncio.CancelledError
        if kind == "stall":
            await asyncio.sleep(self.stall_seconds)
        if kind == "invalid_json":
            return web.Response(body=b'{"id": "cmpl-1", "choices": [', content_type="application/json")
        if kind == "html":
            return web.Response(text="<html><body>Service moved</body></html>", content_type="text/html")
        status, body, content_type = await self._forward(request, body)
        if kind == "truncated":
            body = body[: len(body) // 2]
        elif kind == "empty_choices" and status == 200:
            body = json.dumps(json.loads(body) | {"choices": []}).encode()
        elif kind == "null_text" and status == 200:
            answer = json.loads(body)
            for choice in answer["choices"]:
                if "message" in choice:
                    del choice["message"]
                else:
                    choice["text"] = None
            body = json.dumps(answer).encode()
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})
