"""A small OpenAI-compatible server for tests of how the client takes broken answers.

It answers every prompt kind of the pipeline with a valid, parseable text (a numbered list of
instructions, "No" to the classification question, an input/output pair), so a run finishes on it.
Scripted faults are answered first, one per generation request, in order: `null_text`,
`no_message`, `no_choices_key`, `html`, `404`, `404_model` (vLLM's 404 for a model it does not
serve). `models` sets what GET /v1/models answers: "ok", "html" or "404". It serves plain HTTP, or
HTTPS when given an ssl.SSLContext. `requests` records each request's path.
"""

from __future__ import annotations

import re
import ssl

from aiohttp import web
from local_server import LocalServer

MODEL = "fake-model"
HTML = "<!doctype html><html><body><h1>Welcome</h1></body></html>"
# Distinct enough for the ROUGE-L filter: each instruction request gets the next two.
INSTRUCTIONS = [
    "Describe how tides are caused by the moon and the sun.",
    "List three practical ways to save water in a small garden.",
    "Translate the given English proverb into plain modern French.",
    "Suggest a name for a bakery that sells only sourdough bread.",
    "Explain why the sky looks red at sunset over the ocean.",
    "Write a polite email declining an invitation to a wedding.",
    "Compare electric scooters and bicycles for a daily commute.",
    "Summarize the rules of chess for a curious eight year old.",
]


def answer_text(prompt: str, request_number: int = 0) -> str:
    """A continuation the pipeline's parsers accept, chosen by how the prompt ends."""
    last = prompt.rstrip().rsplit("\n", 1)[-1]
    if last.startswith("Is it classification?"):
        return " No"
    if last.startswith("Input:"):
        return " <none>\nOutput: A clear and complete answer to the task.\n"
    if last.startswith("Class label:"):
        return " Yes\nInput: An example input for this label.\n"
    if re.fullmatch(r"\d+\.", last):
        first = 2 * request_number % len(INSTRUCTIONS)
        return f" {INSTRUCTIONS[first]}\n{int(last[:-1]) + 1}. {INSTRUCTIONS[first + 1]}\n"
    return " Fine."


class FakeEndpoint(LocalServer):
    def __init__(
        self,
        faults: list[str] | None = None,
        models: str = "ok",
        api: str = "both",
        model: str = MODEL,
        ssl_context: ssl.SSLContext | None = None,
    ):
        super().__init__(ssl_context)
        self.faults = list(faults or [])
        self.models = models
        self.api = api  # "completions", "chat" or "both": the other route answers 404
        self.model = model
        self.requests: list[str] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self._models)
        if self.api in ("completions", "both"):
            app.router.add_post("/v1/completions", self._generate)
        if self.api in ("chat", "both"):
            app.router.add_post("/v1/chat/completions", self._generate)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        if self.models == "html":
            return web.Response(text=HTML, content_type="text/html")
        if self.models == "404":
            raise web.HTTPNotFound()
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        body = await request.json()
        chat = request.path.endswith("/chat/completions")
        fault = self.faults.pop(0) if self.faults else None
        if fault == "html":
            return web.Response(text=HTML, content_type="text/html")
        if fault == "404":
            raise web.HTTPNotFound()
        if fault == "404_model":
            message = f"The model `{body.get('model')}` does not exist."
            return web.json_response({"error": {"message": message, "code": 404}}, status=404)
        prompts = [body["messages"][-1]["content"]] if chat else body["prompt"]
        prompts = prompts if isinstance(prompts, list) else [prompts]  # one choice per prompt
        texts = [None if fault == "null_text" else answer_text(p, len(self.requests)) for p in prompts]
        if chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": texts[0]},
                "finish_reason": "stop",
            }
            if fault == "no_message":
                del choice["message"]
            choices = [choice]
        else:
            choices = [
                {"index": n, "text": text, "finish_reason": "stop", "logprobs": None}
                for n, text in enumerate(texts)
            ]
        n = len(prompts)
        answer = {
            "id": "cmpl-fake",
            "object": "chat.completion" if chat else "text_completion",
            "created": 0,
            "model": self.model,
            "choices": choices,
            "usage": {"prompt_tokens": 10 * n, "completion_tokens": 5 * n, "total_tokens": 15 * n},
        }
        if fault == "no_choices_key":
            del answer["choices"]
        return web.json_response(answer)
