"""Which endpoint gets the next request: the one with the fewest prompts in flight; failover.

Replicas differ in speed, so round robin queues requests behind the slowest one; sending each
request to the endpoint with the fewest in flight gives more to whichever answers faster. Ties go
to the endpoint sent fewer requests so far, then to the earlier one in the list.

Failover: an endpoint that refuses or resets a connection, or fails with a server error (5xx) or a
timeout `strikes` times in a row, is taken out of rotation for a backoff that starts at 1 s and
doubles, up to 30 s, each time it fails again. The probe is the next real request sent to it once
its backoff is over, one at a time: its answer puts it back in rotation, its failure doubles its
backoff. Answers and failures of requests sent before it went out say nothing newer than what
took it out (a server shutting down finishes the requests it holds), so they change neither.
While every endpoint is out, requests go to the one whose backoff ends first (the client then
counts their attempts against the retry budget, as with a single endpoint).

Choosing is one pass over the endpoints and no locks: everything runs on the event loop.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
STRIKES = 3  # server errors or timeouts in a row that take an endpoint out of rotation


def is_failover_kind(kind: str) -> bool:
    """Failures that say the endpoint, not the request, is the trouble: a refused or reset
    connection, a server error, a timeout. (A 429 or an invalid answer is retried where it is.)"""
    return kind in ("connection", "timeout") or kind.startswith("http_5")


class Endpoint:
    """One endpoint: its client, its place in the rotation, and its counts for stats.json."""

    __slots__ = (
        "url", "client", "in_flight", "sent", "requests", "failures", "prompt_tokens", "completion_tokens",
        "times_down", "down", "down_until", "backoff", "strikes", "last_failure",
    )  # fmt: skip

    def __init__(self, url: str, client: Any):
        self.url = url
        self.client = client
        self.in_flight = 0
        self.sent = 0  # requests this process sent it, retries included: the tie-break
        self.requests = 0  # prompts sent it, retries and earlier runs of the directory included
        self.failures: Counter[str] = Counter()  # by retry kind
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.times_down = 0  # times taken out of rotation
        self.down = False
        self.down_until = 0.0  # clock time its backoff ends
        self.backoff = 0.0
        self.strikes = 0  # failover-kind failures in a row
        self.last_failure = ""

    def __repr__(self) -> str:
        state = f"down until {self.down_until:.1f}" if self.down else "up"
        return f"Endpoint({self.url!r}, {state}, in_flight={self.in_flight}, sent={self.sent})"


class EndpointPool:
    def __init__(
        self,
        urls: Sequence[str],
        clients: Sequence[Any],
        first_backoff: float = FIRST_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        strikes: int = STRIKES,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.endpoints = [Endpoint(url, client) for url, client in zip(urls, clients, strict=True)]
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.strikes = strikes
        self.clock = clock

    def __iter__(self):
        return iter(self.endpoints)

    def __len__(self) -> int:
        return len(self.endpoints)

    def acquire(self, avoid: Endpoint | None = None, weight: int = 1) -> Endpoint:
        """The endpoint for the next request, its `weight` prompts counted as in flight until
        `release`. Among those in
        rotation and those due for a probe (none in flight): fewest in flight, then fewest sent,
        then the earlier in the list. `avoid`, the endpoint the request just failed on, only when
        no other is in rotation; when every endpoint is out, the one whose backoff ends first."""
        best = None
        now = None
        for ep in self.endpoints:
            if ep is avoid:
                continue
            if ep.down:
                if ep.in_flight:  # its probe is out
                    continue
                if now is None:
                    now = self.clock()
                if now < ep.down_until:
                    continue
            if (
                best is None
                or ep.in_flight < best.in_flight
                or (ep.in_flight == best.in_flight and ep.sent < best.sent)
            ):
                best = ep
        if best is None:
            if avoid is not None and not avoid.down:
                best = avoid
            else:
                best = min(self.endpoints, key=lambda ep: (ep.in_flight, ep.down_until))
        best.in_flight += weight
        best.sent += 1
        best.requests += weight
        return best

    def release(self, ep: Endpoint, weight: int = 1) -> None:
        ep.in_flight -= weight

    def succeeded(self, ep: Endpoint, prompt_tokens: int, completion_tokens: int, probe: bool) -> None:
        """Count an answer (`probe`: it was sent while the endpoint was out of rotation, and puts
        it back)."""
        ep.prompt_tokens += prompt_tokens
        ep.completion_tokens += completion_tokens
        ep.strikes = 0
        if ep.down and probe:
            ep.down = False
            ep.backoff = 0.0
            if len(self.endpoints) > 1:
                log.info("%s: answers again — back in rotation", ep.url)

    def failed(self, ep: Endpoint, kind: str, probe: bool) -> bool:
        """Count a failed request (`probe`: it was sent while the endpoint was out of rotation);
        True when the failure is the endpoint's and it is out of rotation now."""
        ep.failures[kind] += 1
        ep.last_failure = kind
        if not is_failover_kind(kind):
            return False
        if ep.down:
            if probe:  # still failing: wait longer before the next probe
                ep.backoff = min(2 * ep.backoff, self.max_backoff)
                ep.down_until = self.clock() + ep.backoff
            return True
        ep.strikes += 1
        if kind == "connection" or ep.strikes >= self.strikes:
            ep.down = True
            ep.strikes = 0
            ep.times_down += 1
            ep.backoff = self.first_backoff
            ep.down_until = self.clock() + ep.backoff
            if len(self.endpoints) > 1:
                log.warning("%s: %s error — out of rotation, tried again in %.0f s", ep.url, kind, ep.backoff)
            return True
        return False

    def up(self) -> int:
        """How many endpoints are in rotation."""
        return sum(not ep.down for ep in self.endpoints)

    def any_up(self, besides: Endpoint | None = None) -> bool:
        """Whether an endpoint other than `besides` is in rotation."""
        return any(not ep.down and ep is not besides for ep in self.endpoints)

    def mark_down(self, ep: Endpoint) -> None:
        """Take an endpoint out of rotation before any request went to it (it failed the start-up
        check); the next request after the first backoff probes it."""
        ep.down = True
        ep.times_down += 1
        ep.backoff = self.first_backoff
        ep.down_until = self.clock() + ep.backoff


class SummedCounts:
    """One URL's counts for stats.json, summed over the pools that send to it (a stage with a model
    of its own on the same endpoint has its own client) and what earlier runs of the directory
    saved. Read when stats.json is written, so it follows the live counts."""

    def __init__(self, parts: list[Any]):
        self.parts = parts

    def _sum(self, name: str) -> int:
        return sum(getattr(p, name) for p in self.parts)

    @property
    def requests(self) -> int:
        return self._sum("requests")

    @property
    def prompt_tokens(self) -> int:
        return self._sum("prompt_tokens")

    @property
    def completion_tokens(self) -> int:
        return self._sum("completion_tokens")

    @property
    def times_down(self) -> int:
        return self._sum("times_down")

    @property
    def failures(self) -> Counter[str]:
        return sum((Counter(p.failures) for p in self.parts), Counter())


def endpoint_counts(earlier: dict[str, Any], pools: list[EndpointPool]) -> dict[str, SummedCounts]:
    """Counts per URL for stats.json: the saved counts of earlier runs plus those of every pool
    sending to that URL now; URLs no longer used keep their saved counts."""
    parts: dict[str, list[Any]] = {url: [old] for url, old in earlier.items()}
    for pool in pools:
        for ep in pool.endpoints:
            parts.setdefault(ep.url, []).append(ep)
    return {url: SummedCounts(p) for url, p in parts.items()}
