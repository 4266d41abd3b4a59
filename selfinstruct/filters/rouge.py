"""The ROUGE-L novelty filter of the run: reason `too_similar`, through the exact RougeIndex."""

from __future__ import annotations

from selfinstruct.filters.base import Decision
from selfinstruct.filters.rouge_index import RougeIndex


class NoveltyFilter:
    """Rejects a candidate whose ROUGE-L F against any pool instruction is above the threshold.

    A rejected candidate carries its most similar pool instruction above the threshold; a kept one
    its most similar pool instruction overall (exact, for machine_instructions.jsonl).
    """

    def __init__(self, index: RougeIndex):
        self.index = index

    def check(self, text: str) -> Decision:
        match, score = self.index.query(text)
        if match is not None:
            return Decision("too_similar", most_similar=self.index.texts[match], similarity=score)
        match, score = self.index.most_similar(text)
        return Decision(
            None, most_similar=None if match is None else self.index.texts[match], similarity=score
        )
