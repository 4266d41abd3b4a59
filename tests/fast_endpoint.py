"""An OpenAI-compatible endpoint that answers at once, for tests of the run's own machinery.

It reads which of the run's prompts it was sent (instruction list, classification check, input-first
or output-first instances, judge) and answers in that prompt's format with made-up words, so every
stage runs and most instructions pass the filters; `kinds` counts the prompts of each kind, and
`formats` the requests that asked for a response_format. `latency` (seconds) delays each answer, to keep
requests in flight; `items` instructions answer each instruction prompt; a completions request
with a list of prompts gets one choice per prompt. Run it alone with
`python tests/fast_endpoint.py --port 8123`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections import Counter

from aiohttp import web
from local_server import LocalServer

SYLLABLES = "ka lo mi ne ru ta vo shi pe da gu ri mo sa te nu ba zo fi ye ho ki".split()
VERBS = "Describe Explain Summarize List Compare Rewrite Classify Suggest Outline Translate".split()


class FastEndpoint(LocalServer):
    def __init__(
        self, latency: float = 0.0, seed: int = 0, model: str = "fast-model", items: int = 7, port: int = 0
    ):
        super().__init__(port=port)
        self.latency = latency
        self.items = items  # instructions per answer to an instruction prompt
        self.model = model
        self.requests = 0  # HTTP requests answered
        self.prompts = 0  # prompts answered (a completions request may carry several)
        self.kinds: Counter[str] = Counter()  # prompts by the stage that sent them
        self.formats = 0  # requests with a response_format
        self._rng = random.Random(seed)

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.formats += "response_format" in body
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        if self.latency:
            texts = await asyncio.gather(*(self._answer(p) for p in prompts))
        else:  # at once, without a task per prompt: the endpoint's own cost stays small
            texts = [self._text(p) for p in prompts]
        choices = [{"index": n, "text": t, "finish_reason": "stop"} for n, t in enumerate(texts)]
        return web.json_response(self._response("text_completion", choices, prompts, texts))

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.formats += "response_format" in body
        prompt = body["messages"][-1]["content"]
        text = await self._answer(prompt)
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return web.json_response(self._response("chat.completion", [choice], [prompt], [text]))

    def _response(self, kind: str, choices: list[dict], prompts: list[str], texts: list[str]) -> dict:
        self.requests += 1
        self.prompts += len(prompts)
        usage = {
            "prompt_tokens": sum(len(p.split()) for p in prompts),
            "completion_tokens": sum(len(t.split()) for t in texts),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return {"id": f"cmpl-{self.requests}", "object": kind, "model": self.model, "choices": choices,
                "usage": usage}  # fmt: skip

    async def _answer(self, prompt: str) -> str:
        if self.latency:
            await asyncio.sleep(self.latency * (0.5 + self._rng.random()))
        return self._text(prompt)

    def _text(self, prompt: str) -> str:
        tail = prompt.rstrip().rsplit("\n", 1)[-1]
        if tail.endswith('{"score":'):
            self.kinds["judge"] += 1
            score = self._rng.randint(1, 5)
            return f' {score}, "reason": "It rates {score} of 5."}}'
        if tail.startswith("Is it classification?"):
            self.kinds["classification"] += 1
            return " Yes" if self._rng.random() < 0.2 else " No"
        self.kinds["instances" if tail.startswith(("Class label:", "Input:")) else "instructions"] += 1
        if tail.startswith("Class label:"):
            pairs = [f"{self._word()}\nInput: {self._sentence(6)}" for _ in range(2)]
            return " " + "\nClass label: ".join(pairs)
        if tail.startswith("Input:"):
            pairs = [f" {self._sentence(5)}\nOutput: {self._sentence(8)}"]
            pairs += [
                f"\nExample {n}\nInput: {self._sentence(5)}\nOutput: {self._sentence(8)}" for n in (2, 3)
            ]
            return "".join(pairs)
        first = int(tail.rstrip(".")) if tail.rstrip(".").isdigit() else 9
        items = [f"{n}. {self._instruction()}" for n in range(first, first + self.items)]
        return " " + "\n".join(items)[len(f"{first}. ") :] + "\n\n"

    def _word(self) -> str:
        return "".join(self._rng.choices(SYLLABLES, k=self._rng.randint(2, 4)))

    def _sentence(self, words: int) -> str:
        """Words of 2 to 4 syllables, drawn in two calls (one per syllable is most of the endpoint's
        CPU)."""
        lengths = self._rng.choices((2, 3, 4), k=words)
        syllables = self._rng.choices(SYLLABLES, k=sum(lengths))
        out, at = [], 0
        for n in lengths:
            out.append("".join(syllables[at : at + n]))
            at += n
        return " ".join(out).capitalize() + "."

    def _instruction(self) -> str:
        return f"{self._rng.choice(VERBS)} the {self._sentence(self._rng.randint(5, 12)).lower()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    endpoint = FastEndpoint(args.latency)
    loop = endpoint._loop
    asyncio.set_event_loop(loop)
    loop.run_until_complete(endpoint.serve_on(args.port))
    print(f"serving {endpoint.url}", flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main()
