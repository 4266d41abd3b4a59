"""Prompts ready at the same moment share one completions request; usage is split exactly."""

from __future__ import annotations

import asyncio

import pytest
from fast_endpoint import FastEndpoint

from selfinstruct.config import Sampling
from selfinstruct.generation.client import LLMClient, split_tokens


@pytest.mark.parametrize(
    ("total", "weights", "expected"),
    [(10, [1], [10]), (10, [1, 1], [5, 5]), (10, [1, 2], [3, 7]), (7, [1, 1, 1], [3, 2, 2]),
     (0, [3, 4], [0, 0]), (5, [0, 0], [3, 2])],
)  # fmt: skip
def test_usage_is_split_in_proportion_and_sums_exactly(total, weights, expected):
    assert split_tokens(total, weights) == expected
    assert sum(split_tokens(total, weights)) == total


def ask_all(url: str, prompts: list[str], max_batch: int, api: str = "completions"):
    async def go():
        client = LLMClient([url], "fast-model", api=api, max_batch=max_batch)
        try:
            sampling = Sampling(temperature=0.0, max_tokens=50)
            return await asyncio.gather(*(client.complete(p, sampling, ["\n\n"]) for p in prompts))
        finally:
            await client.close()

    return asyncio.run(go())


PROMPTS = [f"Task: describe item {n}\nIs it classification?" for n in range(40)]


def test_prompts_ready_together_share_requests_and_each_gets_its_own_answer():
    with FastEndpoint() as endpoint:
        answers = ask_all(endpoint.url, PROMPTS, max_batch=16)
        assert (endpoint.requests, endpoint.prompts) == (3, 40)  # 16 + 16 + 8
    assert all(a.text in (" Yes", " No") for a in answers)
    # FastEndpoint counts words: the split keeps the request's total and follows the prompts' lengths
    assert sum(a.prompt_tokens for a in answers) == sum(len(p.split()) for p in PROMPTS)
    assert sum(a.completion_tokens for a in answers) == len(answers)


def test_one_prompt_per_request_when_batching_is_off_or_for_chat():
    with FastEndpoint() as endpoint:
        ask_all(endpoint.url, PROMPTS[:10], max_batch=1)
        assert (endpoint.requests, endpoint.prompts) == (10, 10)
        ask_all(endpoint.url, PROMPTS[:10], max_batch=16, api="chat")
        assert (endpoint.requests, endpoint.prompts) == (20, 20)


def test_a_run_with_max_batch_1_sends_one_prompt_per_request(tmp_path):
    from clirun import selfinstruct

    with FastEndpoint() as endpoint:
        result = selfinstruct(
            "run", "--backend", "openai", "--base-url", endpoint.url, "-n", "30", "-o", str(tmp_path / "run"),
            "--max-batch", "1", "--concurrency", "8", "--no-progress",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert endpoint.requests == endpoint.prompts
