"""The one interface every instruction filter has: check(text) -> Decision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Decision:
    """reason is None when the text is kept, else a stable snake_case reason."""

    reason: str | None = None
    most_similar: str | None = None
    similarity: float | None = None

    @property
    def kept(self) -> bool:
        return self.reason is None


class InstructionFilter(Protocol):
    def check(self, text: str) -> Decision: ...


def run_filters(filters: list[InstructionFilter], text: str) -> Decision:
    """The first rejecting decision, else the last keep decision (which carries similarity details)."""
    decision = Decision()
    for f in filters:
        decision = f.check(text)
        if not decision.kept:
            return decision
    return decision
