"""On-disk response cache: an answered request is never paid for twice, even across a crash.

Every response is appended to `responses.jsonl` in the run directory the moment it arrives, before
anything is parsed or filtered, keyed by a hash of (model, prompt, sampling settings, stop, request
index). A resumed run replays what it finds instead of sending the request again. A line that is
not a valid response (the file was edited by hand) is skipped with a warning: that request is
simply sent again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from selfinstruct.config import Sampling
from selfinstruct.generation.client import Completion
from selfinstruct.records import CachedResponse
from selfinstruct.tasks import JsonlWriter, recover_jsonl

_SAMPLING = set(Sampling.model_fields)
# json.dumps(..., ensure_ascii=False) builds an encoder on every call; this one is built once.
_JSON = json.JSONEncoder(ensure_ascii=False)


def request_key(model: str, prompt: str, sampling: Sampling, stop: list[str] | None, index: str) -> str:
    settings = sampling.model_dump(include=_SAMPLING)  # a stage's own backend is not part of the key
    payload = _JSON.encode([model, prompt, settings, stop or [], index])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _checked(record: dict) -> dict:
    """A cache record as the pipeline reads it, or ValueError when the line is not one."""
    return CachedResponse.model_validate(record).model_dump()


class ResponseCache:
    def __init__(self, path: Path):
        self.records: list[dict] = recover_jsonl(path, validate=_checked)
        self._by_key = {r["key"]: r for r in self.records}
        self._writer = JsonlWriter(path)

    def get(self, key: str) -> Completion | None:
        r = self._by_key.get(key)
        if r is None:
            return None
        return Completion(r["text"], r["finish_reason"], r["prompt_tokens"], r["completion_tokens"])

    def put(self, key: str, stage: str, index: str, completion: Completion) -> None:
        # The client hands over only answers it validated: no second check on this hot path.
        record = CachedResponse.model_construct(
            key=key,
            stage=stage,
            index=index,
            text=completion.text,
            finish_reason=completion.finish_reason,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            endpoint=getattr(completion, "endpoint", "") or None,
        ).model_dump()
        self.records.append(record)
        self._by_key[key] = record
        self._writer.write(record)

    def close(self) -> None:
        self._writer.close()
