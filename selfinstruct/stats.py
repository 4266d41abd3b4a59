"""Counts of a run: requests, tokens, retries, and every drop by its reason; saved as stats.json."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class RunStats:
    target: int = 0
    started: float = field(default_factory=time.monotonic)
    requests: Counter = field(default_factory=Counter)  # by stage
    prompt_tokens: int = 0
    completion_tokens: int = 0
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

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "instructions": {
                "target": self.target,
                "accepted": self.accepted,
                "candidates": self.candidates,
                "acceptance_rate": round(self.accepted / self.candidates, 4) if self.candidates else None,
                "rejected": dict(self.rejected.most_common()),
            },
            "classification": dict(self.classification),
            "instances": {
                "tasks": self.tasks_annotated,
                "generated": self.instances_generated,
                "kept": self.instances_kept,
                "dropped": dict(self.instance_drops.most_common()),
            },
            "dataset_records": self.instances_kept,
            "requests": dict(self.requests),
            "retries": dict(self.retries),
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
            "wall_seconds": round(self.elapsed, 2),
            "completion_tokens_per_second": round(self.tokens_per_second, 2),
        }
