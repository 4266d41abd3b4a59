"""Who runs the model: the embedded CPU model or any model on a vLLM server we start, or an
existing OpenAI-compatible endpoint. Every backend ends as a list of base URLs for the client."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from selfinstruct.config import Backend
from selfinstruct.errors import UserError
from selfinstruct.generation.client import LLMClient
from selfinstruct.generation.embedded import MODEL_NAME, prepare_embedded_model
from selfinstruct.generation.server import CPU_ARGS, CPU_ENV, VLLMServer, cuda_available

# Backend settings that say how to reach the endpoint and change no answer: they may differ when a
# run (or a score) is resumed.
REACHING_THE_ENDPOINT = (
    "backend.base_urls",
    "backend.timeout",
    "backend.max_attempts",
    "backend.max_batch",
    "backend.startup_timeout",
    "backend.server_args",
)


@dataclass
class Endpoint:
    base_urls: list[str]
    model: str | None  # None: use the first model the endpoint lists
    api_key: str = "EMPTY"
    server: VLLMServer | None = None  # set when the run started the server itself


def client_for(endpoint: Endpoint, backend: Backend) -> LLMClient:
    """The client for an opened endpoint, with the backend's API, timeouts, retries and batching."""
    return LLMClient(
        endpoint.base_urls,
        model=endpoint.model or "",
        api_key=endpoint.api_key,
        api=backend.api,
        timeout=backend.timeout,
        max_attempts=backend.max_attempts,
        max_batch=backend.max_batch,
    )


def check_backend(backend: Backend) -> None:
    """Settings a backend cannot start without; checked before anything is written."""
    if backend.kind == "openai" and not backend.base_urls:
        raise UserError("--backend openai needs --base-url URL (an OpenAI-compatible endpoint)")
    if backend.kind == "vllm" and not backend.model:
        raise UserError("--backend vllm needs --model (a local folder or a hub model id)")


def server_for(backend: Backend, log_path: Path | None, seed: int | None = None) -> VLLMServer:
    """The vLLM server the embedded or vllm backend starts (not yet started)."""
    if backend.kind == "embedded":
        model, name, on_cpu = str(prepare_embedded_model()), MODEL_NAME, True
    else:
        model, name, on_cpu = backend.model, backend.model, not cuda_available()
    return VLLMServer(
        model,
        served_name=name,
        extra_args=(CPU_ARGS if on_cpu else [])
        + ([] if seed is None else ["--seed", str(seed)])
        + backend.server_args,
        env=CPU_ENV if on_cpu else {},
        log_path=log_path,
        startup_timeout=backend.startup_timeout,
    )


@contextmanager
def open_endpoint(
    backend: Backend, log_path: Path | None = None, seed: int | None = None
) -> Iterator[Endpoint]:
    """Yield the endpoint to talk to; a server started here is stopped on the way out."""
    check_backend(backend)
    if backend.kind == "openai":
        yield Endpoint(backend.base_urls, backend.model, os.environ.get("OPENAI_API_KEY", "EMPTY"))
        return
    with server_for(backend, log_path, seed) as server:
        yield Endpoint([server.base_url], server.served_name, server=server)
