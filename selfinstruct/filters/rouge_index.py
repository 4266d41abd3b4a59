"""An exact, incremental ROUGE-L novelty index that stays fast past 100K instructions.

The reference rule (Self-Instruct, Alpaca) rejects a candidate whose rouge_score ROUGE-L F-measure
against ANY pool instruction is above the threshold; brute force costs a full LCS per pool item,
so a run's filtering grows with the square of the pool. This index makes the same decisions while
computing the LCS for only a handful of pool items per query:

* F = 2·P·R/(P+R) with P = L/n, R = L/m, which is 2L/(m+n) up to rounding. F > t therefore needs
  L ≥ need(m, n) = ceil((t − 1e-9)·(m+n)/2); the 1e-9 margin keeps every pair whose float F could
  exceed t, and the float formula itself decides in the end (pairs at exactly F = 0.7 included).
* L is at most min(m, n) (a length filter) and at most the multiset overlap of the token lists.
  A token list becomes a set of (token, occurrence) elements, so multiset overlap is set overlap.
* Prefix filtering (Bayardo et al., "Scaling up all pairs similarity search", WWW 2007): with every
  set sorted by one global element order, two sets that share at least o elements share one among
  their first |set| − o + 1. Each pool item is indexed under its prefix for the smallest overlap any
  partner could need; a query probes with its own. Rare elements come first, so prefixes avoid the
  frequent words and posting lists stay short. The order must stay fixed while items are indexed:
  it is rebuilt from document frequencies whenever the pool has doubled (amortized linear), and an
  element first seen after a rebuild counts as rarest.
* Candidates that share a prefix element and pass the length filter get an exact LCS (rapidfuzz's
  bit-parallel LCSseq over token ids) and rouge_score's float formula.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

from selfinstruct.filters.tokenizers import Tokenizer, rouge_tokens

_MARGIN = 1e-9


def _char(token_id: int) -> str:
    """A character per token id, skipping the surrogate range. Tokens unknown to the pool (negative
    ids, only in queries) all map to one character no pool item contains: they match nothing."""
    if token_id < 0:
        return chr(0x10FFFF)
    code = token_id + 32
    if code >= 0xD800:
        code += 0x800
    if code > 0x10F000:
        raise ValueError("more than a million distinct tokens")
    return chr(code)


def _rouge_f(lcs: np.ndarray, m: int, n: np.ndarray) -> np.ndarray:
    """rouge_f over arrays, with the same float64 operations in the same order."""
    with np.errstate(invalid="ignore", divide="ignore"):
        precision, recall = lcs / n, lcs / m
        f = 2 * precision * recall / (precision + recall)
    return np.where(lcs > 0, f, 0.0)


def rouge_f(lcs: int, m: int, n: int) -> float:
    """rouge_score's F-measure from the LCS length and the two token counts."""
    if lcs == 0:
        return 0.0
    precision, recall = lcs / n, lcs / m
    return 2 * precision * recall / (precision + recall)


class RougeIndex:
    """The pool of instructions seen so far, answering 'is any of them too similar to this?'."""

    def __init__(self, threshold: float = 0.7, tokenizer: Tokenizer = rouge_tokens):
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold {threshold} is outside (0, 1]")
        self.threshold = threshold
        self.tokenize = tokenizer
        self.texts: list[str] = []
        self._seqs: list[str] = []  # token ids as characters, for the LCS
        self._elems: list[list[int]] = []  # (token, occurrence) element ids
        self._token_ids: dict[str, int] = {}
        self._elem_ids: dict[tuple[int, int], int] = {}
        self._rank: dict[int, int] = {}  # element -> position in the global order (rare first)
        self._prefix_postings: dict[int, list[int]] = defaultdict(list)
        self._postings: dict[int, list[int]] = defaultdict(list)  # every element, for most_similar
        self._df: list[int] = []  # document frequency of each element
        self._lengths = np.zeros(1024, dtype=np.int64)  # token count of each item
        self._next_rebuild = 1024
        t = threshold - _MARGIN
        # The smallest overlap any partner of a set of size n could need (see the module docstring).
        self._min_overlap = lambda n: self._need(max(1, math.ceil(t * n / (2 - t))), n) if n else 0

    def __len__(self) -> int:
        return len(self.texts)

    def _need(self, m: int, n: int) -> int:
        return max(1, math.ceil((self.threshold - _MARGIN) * (m + n) / 2))

    def _encode(self, text: str, grow: bool) -> tuple[str, list[int]]:
        """Token ids (as a string, one character per token: rapidfuzz's fastest LCS input) and
        (token, occurrence) element ids; unknown tokens and elements get new ids only if grow."""
        seq, elems, seen = [], [], defaultdict(int)
        for tok in self.tokenize(text):
            tid = self._token_ids.get(tok)
            if tid is None:
                tid = len(self._token_ids) if grow else -1  # not in the pool: matches nothing
                if grow:
                    self._token_ids[tok] = tid
            seq.append(tid)
            occ = seen[tid]
            seen[tid] += 1
            eid = self._elem_ids.get((tid, occ))
            if eid is None:
                if grow:
                    eid = self._elem_ids[(tid, occ)] = len(self._elem_ids)
                    self._df.append(0)
                    self._rank[eid] = eid - 2**40  # new since the last rebuild: rarest
                else:
                    eid = -1 - len(elems)  # unseen: shares nothing with the pool
            elems.append(eid)
        return "".join(map(_char, seq)), elems

    def _prefix(self, elems: list[int]) -> list[int]:
        """The elements under which a set is indexed or probed: its first n - o + 1 in the global
        order, o being the smallest overlap any partner could need. Elements the pool has never
        seen (negative ids, queries only) count as the rarest: they take prefix places but can
        match nothing, so they are not returned."""
        n = len(elems)
        if not n:
            return []
        known = [e for e in elems if e >= 0]
        keep = n - self._min_overlap(n) + 1 - (n - len(known))
        if keep <= 0:
            return []
        known.sort(key=self._rank.__getitem__)
        return known[:keep]

    def add(self, text: str) -> int:
        return self._add(text, *self._encode(text, grow=True))

    def _add(self, text: str, seq: str, elems: list[int]) -> int:
        item = len(self.texts)
        self.texts.append(text)
        self._seqs.append(seq)
        self._elems.append(elems)
        if item == len(self._lengths):
            self._lengths = np.concatenate([self._lengths, np.zeros_like(self._lengths)])
        self._lengths[item] = len(seq)
        for e in elems:
            self._df[e] += 1
            self._postings[e].append(item)
        if len(self.texts) >= self._next_rebuild:
            self._rebuild()
        else:
            for e in self._prefix(elems):
                self._prefix_postings[e].append(item)
        return item

    def _rebuild(self) -> None:
        """A fresh global order from the document frequencies, and every prefix indexed again."""
        df = self._df
        self._rank = {e: r for r, e in enumerate(sorted(range(len(df)), key=lambda e: (df[e], e)))}
        self._prefix_postings = defaultdict(list)
        for item, elems in enumerate(self._elems):
            for e in self._prefix(elems):
                self._prefix_postings[e].append(item)
        self._next_rebuild = 2 * len(self.texts)

    def query(self, text: str) -> tuple[int | None, float]:
        """The pool item with the highest F among those above the threshold, else (None, 0.0)."""
        return self._query(*self._encode(text, grow=False))

    def _query(self, seq: str, elems: list[int]) -> tuple[int | None, float]:
        m = len(seq)
        if m == 0:
            return None, 0.0
        candidates: set[int] = set()
        postings = self._prefix_postings
        for e in self._prefix(elems):
            if e >= 0 and e in postings:
                candidates.update(postings[e])
        if not candidates:
            return None, 0.0
        if len(candidates) <= 48:  # few candidates: plain Python beats numpy's per-call overhead
            best, best_f, seqs, threshold = None, 0.0, self._seqs, self.threshold
            for item in sorted(candidates):
                other = seqs[item]
                n = len(other)
                need = self._need(m, n)
                if min(m, n) < need:
                    continue
                lcs = LCSseq.similarity(seq, other, score_cutoff=need)
                if lcs:
                    f = rouge_f(lcs, m, n)
                    if f > threshold and f > best_f:
                        best, best_f = item, f
            return best, best_f
        items = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
        items.sort()
        n = self._lengths[items]
        need = np.maximum(1, np.ceil((self.threshold - _MARGIN) * (m + n) / 2))
        fits = np.minimum(m, n) >= need  # the length filter
        items, n = items[fits], n[fits]
        if not len(items):
            return None, 0.0
        seqs = self._seqs
        lcs = process.cdist([seq], [seqs[i] for i in items], scorer=LCSseq.similarity, dtype=np.int64)[0]
        f = _rouge_f(lcs, m, n)
        above = f > self.threshold
        if not above.any():
            return None, 0.0
        best = int(np.argmax(np.where(above, f, -1.0)))
        return int(items[best]), float(f[best])

    def most_similar(self, text: str) -> tuple[int | None, float]:
        """The pool item with the highest F whatever its score ((None, 0.0) if none shares a token).

        Overlap counts over the full posting lists give each item the upper bound 2·o/(m+n); items
        are verified in decreasing order of that bound until it cannot beat the best F found.
        """
        seq, elems = self._encode(text, grow=False)
        m = len(seq)
        lists = [self._postings[e] for e in elems if e >= 0 and e in self._postings]
        if not m or not lists:
            return None, 0.0
        items, overlap = np.unique(np.concatenate([np.asarray(p) for p in lists]), return_counts=True)
        lengths = np.fromiter((len(self._seqs[i]) for i in items), dtype=np.int64, count=len(items))
        bound = 2 * np.minimum(overlap, np.minimum(lengths, m)) / (m + lengths)
        best, best_f = None, 0.0
        for k in np.argsort(-bound, kind="stable"):
            if bound[k] + _MARGIN < best_f:
                break
            item = int(items[k])
            f = rouge_f(LCSseq.similarity(seq, self._seqs[item]), m, int(lengths[k]))
            if f > best_f:
                best, best_f = item, f
        return best, best_f

    def check(self, text: str) -> bool:
        """Query, then add the text when it is kept; True when kept. The text is encoded once:
        tokens new to the pool get ids either way, and match nothing until an item holds them."""
        seq, elems = self._encode(text, grow=True)
        match, _ = self._query(seq, elems)
        if match is None:
            self._add(text, seq, elems)
        return match is None
