"""Counts of a run: requests, tokens, retries, and every drop by its reason; saved as stats.json."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, NonNegativeFloat, NonNegativeInt, ValidationError

from selfinstruct.errors import first_error
from selfinstruct.prompts import parse_classification
from selfinstruct.records import (
    EndpointCounts,
    InstanceCounts,
    InstructionCounts,
    JudgeCounts,
    StageEndpointCounts,
    Stats,
    TokenCounts,
)

log = logging.getLogger(__name__)


class _Carried(BaseModel):
    """What a resume carries over from stats.json (records.Stats), read leniently: everything else is
    rebuilt from the run files."""

    retries: dict[str, NonNegativeInt] = {}
    endpoints: dict[str, EndpointCounts] = {}
    wall_seconds: NonNegativeFloat = 0.0
    resumes: NonNegativeInt = 0


def _read_carried(path: Path) -> _Carried:
    """stats.json's retries, endpoint counts, wall time and resume count; zero, with a warning, when
    a hand edit broke the file: they are counts to report, nothing the data depends on."""
    try:
        carried = _Carried.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        why = "not valid JSON" if isinstance(exc, ValueError) else exc.strerror
    except ValidationError as exc:
        where, message = first_error(exc)
        why = f"{where}: {message}" if where else message
    else:
        return carried
    log.warning(
        "%s: %s — retries, endpoint counts, wall time and the resume count start again from zero", path, why
    )
    return _Carried()


@dataclass
class RunStats:
    target: int = 0
    started: float = field(default_factory=time.monotonic)
    requests: Counter = field(default_factory=Counter)  # by stage
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stage_prompt_tokens: Counter = field(default_factory=Counter)  # by stage
    stage_completion_tokens: Counter = field(default_factory=Counter)
    prices: tuple[float, float] | None = None  # USD per million prompt, completion tokens
    in_flight: int = 0
    candidates: int = 0  # instructions parsed out of responses
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)  # instruction drops by reason
    classification: Counter = field(default_factory=Counter)  # yes / no / unparsed
    instances_generated: int = 0
    instances_kept: int = 0
    instance_drops: Counter = field(default_factory=Counter)
    tasks_annotated: int = 0
    retries: Counter = field(default_factory=Counter)  # transient errors by kind
    replayed: int = 0  # responses taken from the cache instead of being requested again
    prior_seconds: float = 0.0  # wall time of the earlier, interrupted runs of this directory
    resumes: int = 0
    # Per endpoint URL: anything with EndpointCounts' fields (the client's dispatch.Endpoint objects).
    endpoints: dict = field(default_factory=dict)
    # (stage, base URL) -> [requests, prompt tokens, completion tokens]
    stage_endpoints: dict = field(default_factory=dict)
    judging: bool = False  # the judge is on: stats.json has its counts
    judge: Counter = field(default_factory=Counter)  # scored, low_score, unparsed
    scores: Counter = field(default_factory=Counter)  # records by score

    @classmethod
    def resumed(
        cls, target: int, prior: dict[str, list[dict]], responses: list[dict], path: Path
    ) -> RunStats:
        """Counts rebuilt from what earlier runs of the directory wrote (all zero for a new run).
        Instance counts are rebuilt as the pipeline replays the instance records."""
        s = cls(target=target)
        s.accepted = len(prior["machine_instructions"])
        s.rejected = Counter(r["reason"] for r in prior["rejected"])
        s.candidates = s.accepted + sum(n for reason, n in s.rejected.items() if reason != "truncated")
        for r in prior["classification"]:
            verdict = parse_classification(r.get("raw", ""))
            s.classification["unparsed" if verdict is None else "yes" if verdict else "no"] += 1
        for r in responses:
            s.requests[r["stage"]] += 1
            s.stage_prompt_tokens[r["stage"]] += r["prompt_tokens"]
            s.stage_completion_tokens[r["stage"]] += r["completion_tokens"]
            s._count_at(r["stage"], r.get("endpoint") or "", r["prompt_tokens"], r["completion_tokens"])
        s.prompt_tokens = sum(s.stage_prompt_tokens.values())
        s.completion_tokens = sum(s.stage_completion_tokens.values())
        if path.exists() and responses:
            old = _read_carried(path)
            s.retries = Counter(old.retries)
            s.endpoints = dict(old.endpoints)
            s.prior_seconds = old.wall_seconds
            s.resumes = old.resumes + 1
        return s

    def count_response(self, stage: str, completion) -> None:
        self.requests[stage] += 1
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens
        self.stage_prompt_tokens[stage] += completion.prompt_tokens
        self.stage_completion_tokens[stage] += completion.completion_tokens
        self._count_at(stage, completion.endpoint, completion.prompt_tokens, completion.completion_tokens)

    def _count_at(self, stage: str, endpoint: str, prompt_tokens: int, completion_tokens: int) -> None:
        counts = self.stage_endpoints.get((stage, endpoint))
        if counts is None:
            counts = self.stage_endpoints[stage, endpoint] = [0, 0, 0]
        counts[0] += 1
        counts[1] += prompt_tokens
        counts[2] += completion_tokens

    def count_judgement(self, judgement, min_score: int | None, unparsed: str) -> str | None:
        """Count one record's rating; the reason it is dropped for, if it is."""
        if judgement is None:
            self.judge["unparsed"] += 1
            return "unparsed_score" if unparsed == "drop" else None
        self.judge["scored"] += 1
        self.scores[judgement.score] += 1
        if min_score is not None and judgement.score < min_score:
            self.judge["low_score"] += 1
            return "low_score"
        return None

    @property
    def elapsed(self) -> float:
        return self.prior_seconds + time.monotonic() - self.started

    @property
    def cost_usd(self) -> float | None:
        """What the responses so far cost at `prices`; None without prices."""
        if self.prices is None:
            return None
        return (self.prompt_tokens * self.prices[0] + self.completion_tokens * self.prices[1]) / 1e6

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict:
        """stats.json's content, checked by its model."""
        return self.snapshot().model_dump()

    def snapshot(self) -> Stats:
        return Stats(
            instructions=InstructionCounts(
                target=self.target,
                accepted=self.accepted,
                candidates=self.candidates,
                acceptance_rate=round(self.accepted / self.candidates, 4) if self.candidates else None,
                rejected=dict(self.rejected.most_common()),
            ),
            classification=dict(self.classification),
            instances=InstanceCounts(
                tasks=self.tasks_annotated,
                generated=self.instances_generated,
                kept=self.instances_kept,
                dropped=dict(self.instance_drops.most_common()),
            ),
            dataset_records=self.instances_kept,
            requests=dict(self.requests),
            retries=dict(self.retries),
            replayed_responses=self.replayed,
            resumes=self.resumes,
            tokens=TokenCounts(prompt=self.prompt_tokens, completion=self.completion_tokens),
            tokens_by_stage={
                stage: TokenCounts(
                    prompt=self.stage_prompt_tokens[stage], completion=self.stage_completion_tokens[stage]
                )
                for stage in self.requests
            },
            cost_usd=None if self.prices is None else round(self.cost_usd, 6),
            wall_seconds=round(self.elapsed, 2),
            completion_tokens_per_second=round(self.tokens_per_second, 2),
            endpoints={
                url: EndpointCounts(
                    requests=c.requests,
                    failures=dict(c.failures),
                    prompt_tokens=c.prompt_tokens,
                    completion_tokens=c.completion_tokens,
                    times_down=c.times_down,
                )
                for url, c in self.endpoints.items()
            },
            requests_by_stage_endpoint=self._by_stage_endpoint(),
            judge=JudgeCounts(
                scored=self.judge["scored"],
                low_score=self.judge["low_score"],
                unparsed=self.judge["unparsed"],
                histogram={str(k): self.scores[k] for k in range(1, 6)},
            )
            if self.judging
            else None,
        )

    def _by_stage_endpoint(self) -> dict[str, dict[str, StageEndpointCounts]]:
        out: dict[str, dict[str, StageEndpointCounts]] = {}
        for (stage, url), (n, p, c) in self.stage_endpoints.items():
            out.setdefault(stage, {})[url] = StageEndpointCounts(
                requests=n, prompt_tokens=p, completion_tokens=c
            )
        return out
