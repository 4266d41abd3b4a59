"""Tokens/s of the embedded model on vLLM's CPU build: vLLM's default core binding vs ours.

Starts the server twice in one run (vLLM's default: compute on all cores but one, which it
reserves; then selfinstruct's CPU_ENV: compute on every core), sends the same bootstrap prompts
with the same concurrency to each, and prints tokens/s and the ratio.

    .venv/bin/python scripts/bench_cpu_server.py --requests 32 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

from selfinstruct.config import Sampling
from selfinstruct.generation.client import LLMClient
from selfinstruct.generation.embedded import MODEL_NAME, prepare_embedded_model
from selfinstruct.generation.server import CPU_ARGS, CPU_ENV, VLLMServer
from selfinstruct.prompts import INSTRUCTION_STOP, build_instruction_prompt
from selfinstruct.resources import resource_path
from selfinstruct.tasks import load_seeds


async def measure(base_url: str, prompts: list[str], concurrency: int) -> tuple[int, float]:
    client = LLMClient([base_url], MODEL_NAME)
    sampling = Sampling(temperature=0.7, top_p=0.5, max_tokens=256, presence_penalty=2.0)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(prompt):
        async with semaphore:
            return await client.complete(prompt, sampling, INSTRUCTION_STOP)

    await one(prompts[0])  # warm-up
    start = time.perf_counter()
    results = await asyncio.gather(*map(one, prompts))
    elapsed = time.perf_counter() - start
    await client.close()
    return sum(r.completion_tokens for r in results), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--seeds", default=str(resource_path("seeds/en.jsonl")), help="Seed tasks for the prompts."
    )
    args = parser.parse_args()

    seeds = [t.instruction for t in load_seeds(args.seeds)]
    rng = random.Random(0)
    prompts = [build_instruction_prompt(rng.sample(seeds, 8)) for _ in range(args.requests)]
    model = str(prepare_embedded_model())
    default_env = {"VLLM_CPU_KVCACHE_SPACE": CPU_ENV["VLLM_CPU_KVCACHE_SPACE"]}
    rates = {}
    for name, env in [("vLLM default binding", default_env), ("selfinstruct CPU_ENV", CPU_ENV)]:
        with VLLMServer(model, MODEL_NAME, CPU_ARGS + ["--seed", "0"], env) as server:
            tokens, elapsed = asyncio.run(measure(server.base_url, prompts, args.concurrency))
        rates[name] = tokens / elapsed
        print(f"{name:24s} {tokens:6d} tokens in {elapsed:6.1f} s = {rates[name]:6.1f} tokens/s")
    baseline, ours = rates.values()
    print(f"ratio: {ours / baseline:.2f}x")


if __name__ == "__main__":
    main()
