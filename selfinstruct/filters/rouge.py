"""ROUGE-L novelty check against the whole pool, with rouge_score's exact float formula.

Self-Instruct rejects a new instruction whose ROUGE-L F-measure (rouge_score `rougeL`, default
tokenizer, no stemming) against any instruction already in the pool is above 0.7.
"""

from __future__ import annotations

from selfinstruct.filters.base import Decision
from selfinstruct.filters.tokenizers import Tokenizer, rouge_tokens


def lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l_f(a: list[str], b: list[str]) -> float:
    """F-measure as rouge_score computes it (precision and recall first, then 2PR/(P+R))."""
    if not a or not b:
        return 0.0
    lcs = lcs_length(a, b)
    precision, recall = lcs / len(b), lcs / len(a)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


class RougePool:
    """The instructions seen so far; answers the most similar one to a candidate."""

    def __init__(self, texts: list[str] = (), tokenizer: Tokenizer = rouge_tokens):
        self.tokenize = tokenizer
        self.texts: list[str] = []
        self._tokens: list[list[str]] = []
        for t in texts:
            self.add(t)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str) -> None:
        self.texts.append(text)
        self._tokens.append(self.tokenize(text))

    def most_similar(self, text: str) -> tuple[str | None, float]:
        tokens = self.tokenize(text)
        best, best_score = None, 0.0
        for other, other_tokens in zip(self.texts, self._tokens, strict=True):
            score = rouge_l_f(tokens, other_tokens)
            if score > best_score:
                best, best_score = other, score
        return best, best_score


class NoveltyFilter:
    """Rejects a candidate too similar to any instruction in the pool (reason `too_similar`)."""

    def __init__(self, pool: RougePool, threshold: float = 0.7):
        self.pool = pool
        self.threshold = threshold

    def check(self, text: str) -> Decision:
        other, score = self.pool.most_similar(text)
        reason = "too_similar" if score > self.threshold else None
        return Decision(reason, most_similar=other, similarity=score)
