"""Broken endpoints: invalid answers are retried and never cached, permanent failures are one line.

The CLI runs as a subprocess against tests/fake_endpoint.py, a small OpenAI-compatible server that
answers like a broken endpoint on demand (HTML, null text, no message, 404, a self-signed TLS
certificate) and validly otherwise, so a run can finish on it.
"""

import asyncio
import json
import ssl
import subprocess
from pathlib import Path

import pytest
from clirun import selfinstruct
from fake_endpoint import FakeEndpoint
from test_cli import assert_user_error


def run(url: str, out: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return selfinstruct(
        "run", "--backend", "openai", "--base-url", url, "-n", "2", "-o", str(out),
        "--max-attempts", "2", "--no-progress", *args, timeout=120, env=env,
    )  # fmt: skip


def cached_texts(out: Path) -> list:
    path = out / "responses.jsonl"
    return [json.loads(ln)["text"] for ln in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize(
    "api, fault",
    [
        ("completions", "null_text"),
        ("completions", "html"),
        ("completions", "no_choices_key"),
        ("chat", "no_message"),
        ("chat", "html"),
    ],
)
def test_an_invalid_answer_is_retried_and_never_cached(tmp_path: Path, api: str, fault: str):
    with FakeEndpoint(faults=[fault]) as endpoint:
        result = run(endpoint.url, tmp_path / "run", "--api", api)
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["retries"] == {"invalid_body": 1}
    assert all(isinstance(text, str) for text in cached_texts(tmp_path / "run"))


def test_a_chat_answer_with_null_content_is_an_empty_answer(tmp_path: Path):
    """Null content is what the API sends for an answer without text; it is not retried."""
    with FakeEndpoint(faults=["null_text"]) as endpoint:
        result = run(endpoint.url, tmp_path / "run", "--api", "chat")
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["retries"] == {}
    assert "" in cached_texts(tmp_path / "run")


def test_an_invalid_answer_that_persists_is_one_line_and_nothing_is_cached(tmp_path: Path):
    with FakeEndpoint(faults=["null_text", "null_text"]) as endpoint:
        result = run(endpoint.url, tmp_path / "run", "--concurrency", "1")
    assert_user_error(
        result,
        f"error: http://127.0.0.1:{endpoint.port}/v1/: invalid_body error persisted after 2 attempts "
        "(choices.0.text: Input should be a valid string)",
    )
    assert cached_texts(tmp_path / "run") == []


def test_models_answering_html_is_one_line(tmp_path: Path):
    with FakeEndpoint(models="html") as endpoint:
        result = run(endpoint.url, tmp_path / "run")
    assert_user_error(
        result,
        f"error: http://127.0.0.1:{endpoint.port}/v1/models: did not answer like an OpenAI-compatible API "
        "(got text/html, not JSON) — check --base-url, it usually ends in /v1",
    )


def test_a_base_url_without_v1_says_so(tmp_path: Path):
    with FakeEndpoint() as endpoint:
        result = run(f"http://127.0.0.1:{endpoint.port}", tmp_path / "run")
    assert_user_error(
        result,
        f"error: http://127.0.0.1:{endpoint.port}/models: HTTP 404: 404: Not Found "
        f"— check --base-url: it usually ends in /v1 (e.g. http://127.0.0.1:{endpoint.port}/v1)",
    )


def test_a_plain_web_server_says_so(tmp_path: Path):
    with FakeEndpoint(models="404") as endpoint:
        result = run(endpoint.url, tmp_path / "run")
    assert_user_error(
        result,
        f"error: http://127.0.0.1:{endpoint.port}/v1/models: HTTP 404: 404: Not Found "
        "— no OpenAI-compatible API answers at this URL — check --base-url",
    )


@pytest.mark.parametrize(
    "served, api, path, hint",
    [
        ("completions", "chat", "chat/completions", "this endpoint has no chat API — use --api completions"),
        ("chat", "completions", "completions", "this endpoint has no completions API — use --api chat"),
    ],
)
def test_the_api_the_endpoint_lacks_says_which_to_use(tmp_path: Path, served, api, path, hint):
    with FakeEndpoint(api=served) as endpoint:
        result = run(endpoint.url, tmp_path / "run", "--api", api)
    assert_user_error(
        result, f"error: http://127.0.0.1:{endpoint.port}/v1/{path}: HTTP 404: 404: Not Found — {hint}"
    )


def test_a_model_the_endpoint_does_not_serve_after_all_says_check_model(tmp_path: Path):
    with FakeEndpoint(faults=["404_model"]) as endpoint:
        result = run(endpoint.url, tmp_path / "run", "--concurrency", "1")
    assert_user_error(
        result,
        f"error: http://127.0.0.1:{endpoint.port}/v1/completions: HTTP 404: "
        "The model `fake-model` does not exist. — check --model",
    )


def test_every_base_url_is_checked_at_start(tmp_path: Path):
    with FakeEndpoint() as good, FakeEndpoint(models="404") as bad, FakeEndpoint(models="html") as junk:
        result = run(f"{good.url},{bad.url},{junk.url}", tmp_path / "run")
    assert_user_error(
        result,
        f"error: http://127.0.0.1:{bad.port}/v1/models: HTTP 404",
        f"; http://127.0.0.1:{junk.port}/v1/models: did not answer like an OpenAI-compatible API",
    )
    assert good.requests == ["/v1/models"]  # checked, and no generation was sent


def test_the_model_must_be_served_by_every_base_url(tmp_path: Path):
    with FakeEndpoint() as first, FakeEndpoint(model="other-model") as second:
        result = run(f"{first.url},{second.url}", tmp_path / "run")
    assert_user_error(
        result,
        f"error: model 'fake-model' is not served by http://127.0.0.1:{second.port}/v1/ "
        "(it serves: other-model) — check --model and that every --base-url serves the same model",
    )


def test_every_base_url_is_used(tmp_path: Path):
    with FakeEndpoint() as first, FakeEndpoint() as second:
        result = run(f"{first.url},{second.url}", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "/v1/completions" in first.requests and "/v1/completions" in second.requests


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory) -> tuple[Path, ssl.SSLContext]:
    """A certificate for 127.0.0.1 that no CA signed, and a server context that presents it."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return cert, context


def test_an_untrusted_certificate_is_one_line_and_not_retried(tmp_path: Path, self_signed):
    cert, context = self_signed
    with FakeEndpoint(ssl_context=context) as endpoint:
        result = run(endpoint.url, tmp_path / "run", "--max-attempts", "6", env={"SSL_CERT_FILE": ""})
    assert_user_error(
        result,
        f"error: https://127.0.0.1:{endpoint.port}/v1/: the server's TLS certificate is not trusted "
        "(self-signed certificate) — set SSL_CERT_FILE to a CA bundle that trusts it, "
        "or fix the server's certificate",
    )
    assert "attempts" not in result.stderr


def test_a_generation_request_to_an_untrusted_server_is_not_retried(self_signed, monkeypatch):
    from selfinstruct.config import Sampling
    from selfinstruct.errors import EndpointError
    from selfinstruct.generation.client import LLMClient

    monkeypatch.delenv("SSL_CERT_FILE", raising=False)

    async def ask(url: str) -> LLMClient:
        client = LLMClient([url], "fake-model", max_attempts=6)
        try:
            with pytest.raises(EndpointError, match="TLS certificate is not trusted"):
                await client.complete("1.", Sampling(max_tokens=8))
        finally:
            await client.close()
        return client

    with FakeEndpoint(ssl_context=self_signed[1]) as endpoint:
        client = asyncio.run(ask(endpoint.url))
    assert client.retries == {}


def test_ssl_cert_file_trusts_the_certificate(tmp_path: Path, self_signed):
    """The fix the message names works."""
    cert, context = self_signed
    with FakeEndpoint(ssl_context=context) as endpoint:
        result = run(endpoint.url, tmp_path / "run", env={"SSL_CERT_FILE": str(cert)})
    assert result.returncode == 0, result.stderr
