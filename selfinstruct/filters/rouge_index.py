"""An exact, incremental ROUGE-L novelty index that stays fast past 100K instructions.

The reference rule (Self-Instruct, Alpaca) rejects a candidate whose rouge_score ROUGE-L F-measure
against ANY pool instruction is above the threshold t. From the LCS length L of the two token lists
(m tokens in the candidate, n in the pool item) rouge_score computes P = L/n, R = L/m and
F = 2·P·R/(P+R), which is 2L/(m+n) up to float rounding. Brute force costs an LCS per pool item;
this index makes the same decisions while computing the LCS for only a handful of pool items.

* F > t needs L ≥ need(m, n) = ceil((t − 1e-9)·(m+n)/2); the 1e-9 margin keeps every pair whose
  float F could exceed t, and the float formula itself decides in the end (pairs at exactly F = 0.7
  included). L is at most min(m, n) (the length filter) and at most the multiset overlap of the
  two token lists.
* Encoding: every token gets one character, and a token list becomes a string of them, which
  rapidfuzz's bit-parallel LCS reads directly. As a set, a token list is its (token, occurrence)
  elements, a first occurrence written as the character and the k-th repeat as the pair
  (character, k), so that set overlap is multiset overlap and a token repeated n times costs n
  elements, not n²/2 characters.
* Prefix filtering (Bayardo et al., "Scaling up all pairs similarity search", WWW 2007): with
  every set sorted by one global order, two sets sharing at least o elements share one among
  the first |set| − o + 1 of each. A pool item is indexed under its prefix for the smallest
  overlap any partner could need; a query probes with its own. The global order is the order of
  the characters, so sorting a string sorts its elements: rare tokens get low characters, so that
  prefixes hold rare words and posting lists stay short.
* The order must stay fixed for the items already indexed. Tokens are re-ranked by document
  frequency whenever the pool has doubled (every item re-encoded and re-indexed: amortized
  linear); a token first seen in between gets a character below all others, which leaves the
  order among existing tokens, and with it every indexed prefix, unchanged. A query's tokens
  unknown to the pool all read as the lowest character: they match nothing.
* The candidates (pool items sharing a prefix element with the query) go to one rapidfuzz
  `process.extract` call: a bit-parallel LCS for each in C++, keeping those that reach the least
  LCS any partner of the query's size needs (for most queries, none). The length filter, the
  exact need(m, n) and rouge_score's float formula decide the few it keeps.
* The cost per query is a few microseconds of Python (tokenize, encode, sort, probe) plus that
  one call; `scripts/bench_rouge.py` measures it against rouge_score brute force.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter, defaultdict

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

from selfinstruct.filters.tokenizers import Tokenizer, rouge_tokens

_MARGIN = 1e-9
_UNKNOWN = "\0"  # a query token the pool has never seen: below every token character
_SURROGATES = 0x800  # code points 0xD800-0xDFFF cannot stand alone in a str
_CODES = 0x110000 - _SURROGATES - 1  # usable code points, 0 excluded
_FIRST_REBUILD = 64
_FIRST_CHECK = 32  # most_similar verifies this many of the highest bounds before pruning


def _int_array() -> array:
    return array("i")


def _char(code: int) -> str:
    """The code-th usable character (1 ≤ code ≤ _CODES), skipping the surrogates."""
    return chr(code if code < 0xD800 else code + _SURROGATES)


def rouge_f(lcs: int, m: int, n: int) -> float:
    """rouge_score's F-measure from the LCS length and the two token counts."""
    if lcs == 0:
        return 0.0
    precision, recall = lcs / n, lcs / m
    return 2 * precision * recall / (precision + recall)


def _rouge_f_array(lcs: np.ndarray, m: int, n: np.ndarray) -> np.ndarray:
    """rouge_f elementwise, in the same float operations (so the same values); every n > 0."""
    precision, recall = lcs / n, lcs / m
    return np.divide(2 * precision * recall, precision + recall, out=np.zeros(len(n)), where=lcs > 0)


Element = str | tuple[str, int]


def _elements(chars: list[str]) -> list[Element]:
    """Sorted characters as (token, occurrence) elements: the first occurrence of a token is its
    character, the k-th repeat the pair (character, k); linear in the text however often a token
    repeats."""
    out: list[Element] = []
    previous, k = "", 0
    for c in chars:
        k = k + 1 if c == previous else 0
        out.append((c, k) if k else c)
        previous = c
    return out


def _translate(e: Element, table: dict[int, str]) -> Element:
    """An element under a new character table."""
    return e.translate(table) if isinstance(e, str) else (e[0].translate(table), e[1])


class RougeIndex:
    """The pool of instructions seen so far, answering 'is any of them too similar to this?'."""

    def __init__(self, threshold: float = 0.7, tokenizer: Tokenizer = rouge_tokens):
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold {threshold} is outside (0, 1]")
        self.threshold = threshold
        self.tokenize = tokenizer
        self.texts: list[str] = []
        self._seqs: list[str] = []  # one character per token, for the LCS and the order
        self._chars: dict[str, str] = {}  # token -> its character
        self._df: Counter[str] = Counter()  # document frequency of each token
        self._next_char = _CODES  # new tokens count down from here until the next rebuild
        self._prefix_postings: dict[Element, list[int]] = defaultdict(list)
        self._postings: dict[Element, array] | None = None  # every element; built by most_similar
        self._lengths = array("i")  # token count of each item
        self._next_rebuild = _FIRST_REBUILD
        self._rows: dict[int, tuple[int, list[int], int]] = {}  # m -> (prefix length, need, least)

    def __len__(self) -> int:
        return len(self.texts)

    def _row(self, m: int) -> tuple[int, list[int], int]:
        """For a set of m elements: how many of its first elements form its prefix, need(m, n) for
        every partner size n (0 where the length filter already rules the pair out), and the
        least of those needs."""
        row = self._rows.get(m)
        if row is None:
            t = self.threshold - _MARGIN
            need = [0] * (math.floor(m * (2 - t) / t) + 2)
            for n in range(1, len(need)):
                lcs = max(1, math.ceil(t * (m + n) / 2))
                need[n] = lcs if min(m, n) >= lcs else 0
            least = min(k for k in need if k)  # the least any partner needs (n = m always can)
            row = self._rows[m] = (m - least + 1, need, least)
        return row

    def _encode(self, tokens: list[str]) -> str:
        chars = self._chars
        return "".join([chars.get(tok, _UNKNOWN) for tok in tokens])

    def _prefix(self, seq: str, keep: int) -> list[Element]:
        """The first `keep` elements of a token list in the global order."""
        first = sorted(seq)[:keep]
        return first if len(set(first)) == len(first) else _elements(first)

    def add(self, text: str) -> int:
        """Put a text in the pool; its position in `texts`."""
        return self._add(text, self.tokenize(text))

    def _add(self, text: str, tokens: list[str], seq: str | None = None) -> int:
        """`seq`, when given, is the query encoding of `tokens`, kept unless a token is new."""
        if seq is None or _UNKNOWN in seq:
            if self._next_char <= len(tokens):
                self._rebuild(reserve=len(tokens))  # out of characters below the ranked ones
            chars = self._chars
            for tok in tokens:
                if tok not in chars:
                    chars[tok] = _char(self._next_char)
                    self._next_char -= 1
            seq = "".join([chars[tok] for tok in tokens])
        self._df.update(set(tokens))
        item = len(self.texts)
        self.texts.append(text)
        self._seqs.append(seq)
        self._lengths.append(len(seq))
        if self._postings is not None:
            self._post_elements(item, seq)
        if len(self.texts) >= self._next_rebuild:
            self._rebuild()
        elif seq:
            self._index_prefix(item, seq)
        return item

    def _post_elements(self, item: int, seq: str) -> None:
        for e in _elements(sorted(seq)):
            self._postings[e].append(item)

    def _index_prefix(self, item: int, seq: str) -> None:
        postings = self._prefix_postings
        for e in self._prefix(seq, self._row(len(seq))[0]):
            postings[e].append(item)

    def _rebuild(self, reserve: int = 0) -> None:
        """Rank the tokens again, rarest first, then re-encode and re-index every item."""
        df = self._df
        ranked = sorted(df, key=df.__getitem__)  # stable: ties stay in order of first appearance
        if 2 * len(ranked) + reserve > _CODES:
            raise ValueError("more than half a million distinct tokens in the pool")
        spare = max(len(ranked), 4096, reserve)  # characters left below the ranked ones for new tokens
        table, chars = {}, {}
        for rank, tok in enumerate(ranked):
            new = chars[tok] = _char(spare + 1 + rank)
            table[ord(self._chars[tok])] = new
        self._chars, self._next_char = chars, spare
        self._seqs = [seq.translate(table) for seq in self._seqs]
        if self._postings is not None:
            self._postings = defaultdict(
                _int_array, {_translate(e, table): p for e, p in self._postings.items()}
            )
        self._prefix_postings = defaultdict(list)
        for item, seq in enumerate(self._seqs):
            if seq:
                self._index_prefix(item, seq)
        self._next_rebuild = 2 * len(self.texts)

    def query(self, text: str) -> tuple[int | None, float]:
        """The pool item with the highest F among those above the threshold, else (None, 0.0)."""
        return self._query(self._encode(self.tokenize(text)))

    def _query(self, seq: str) -> tuple[int | None, float]:
        m = len(seq)
        if m == 0:
            return None, 0.0
        keep, need, least = self._row(m)
        postings = self._prefix_postings
        candidates = set().union(*[postings.get(e, ()) for e in self._prefix(seq, keep)])
        if not candidates:
            return None, 0.0
        items = list(candidates)
        others = list(map(self._seqs.__getitem__, items))
        # One C++ pass scores every candidate and keeps those whose LCS reaches `least`, the
        # smallest any partner of m tokens needs (most queries keep none); the exact length and
        # float checks run on those.
        hits = process.extract(seq, others, scorer=LCSseq.similarity, score_cutoff=least, limit=None)
        best, best_f, threshold, size = None, 0.0, self.threshold, len(need)
        for other, length, k in hits:
            item, n = items[k], len(other)
            if n < size and need[n] and length >= need[n]:
                f = rouge_f(length, m, n)
                if f > threshold and (f > best_f or (f == best_f and item < best)):
                    best, best_f = item, f
        return best, best_f

    def most_similar(self, text: str) -> tuple[int | None, float]:
        """The pool item with the highest F whatever its score, the lowest index among equal F
        ((None, 0.0) if none shares a token).

        The query's elements are taken rarest first. An item's F is at most rouge_f(L) with L the
        least of its overlap with the query and the two lengths, and rouge_f grows with L by steps
        far larger than float rounding, so that bound is exact: an item whose bound is below the
        best F found (or equal, with a higher index) cannot be the answer. The items sharing the
        most of the query's elements but its most common one give a first best F; it says
        whether the most common element's list (the longest) must be read at all, since an item seen in none
        of the scanned lists shares at most the r unscanned ones (F ≤ rouge_f(r, m, r)). The items
        seen are then verified in decreasing order of their bounds, a tier at a time, each tier in
        one rapidfuzz call, until no bound can beat the best. The cost follows the rare tokens'
        posting lists, not the pool.
        """
        if self._postings is None:
            self._postings = defaultdict(_int_array)
            for item, other in enumerate(self._seqs):
                self._post_elements(item, other)
        seq = self._encode(self.tokenize(text))
        m = len(seq)
        postings = self._postings
        lists = [postings.get(e) for e in _elements(sorted(seq))]  # rarest first; None: unknown
        if not any(lists):
            return None, 0.0
        all_lengths = np.frombuffer(self._lengths, dtype=np.int32)
        search = _Search(self, seq, m)
        scanned = max(1, m - 1)  # all but the most common element: its list is the longest
        pool = len(self._seqs)
        items, counts = _Search.counts(lists[:scanned], pool)
        if len(items):  # a first best F from the items sharing the most rare elements
            first = items
            if len(first) > _FIRST_CHECK:
                first = first[np.argpartition(-counts, _FIRST_CHECK)[:_FIRST_CHECK]]
            search.verify(first, all_lengths)
        if scanned < m and rouge_f(m - scanned, m, m - scanned) >= search.best_f:
            while scanned < m and rouge_f(m - scanned, m, m - scanned) >= search.best_f:
                scanned += 1  # an item sharing only the unscanned elements could still be the answer
            items, counts = _Search.counts(lists[:scanned], pool)
        lengths = all_lengths[items].astype(np.float64)
        bound = _rouge_f_array(np.minimum(np.minimum(counts + (m - scanned), lengths), m), m, lengths)
        bound[np.searchsorted(items, search.verified)] = -1.0  # items is sorted and holds them
        while True:
            chosen = np.flatnonzero(
                (bound > search.best_f) | ((bound == search.best_f) & (items < search.best))
            )
            if not len(chosen):
                break
            if len(chosen) > _FIRST_CHECK:  # the highest bounds first, whole tiers at a time
                k = len(chosen) - _FIRST_CHECK
                chosen = chosen[bound[chosen] >= np.partition(bound[chosen], k)[k]]
            search.verify(items[chosen], all_lengths)
            bound[chosen] = -1.0
        return (search.best, search.best_f) if search.best >= 0 else (None, 0.0)

    def most_similar_many(self, texts: list[str], workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """`most_similar` for many texts against a small pool (e.g. a seed set): the best F of each
        text (0.0 when it shares no token) and the pool item that has it (the first on ties; -1 for
        none). One rapidfuzz `cdist` call per block computes every LCS in C++, and rouge_score's
        float formula, applied elementwise in the same order, gives the same scores."""
        items = np.full(len(texts), -1, dtype=np.int64)
        scores = np.zeros(len(texts))
        if not self._seqs:
            return items, scores
        lengths = np.array([len(seq) for seq in self._seqs], dtype=np.float64)
        block = max(1, 2_000_000 // len(self._seqs))
        for start in range(0, len(texts), block):
            seqs = [self._encode(self.tokenize(t)) for t in texts[start : start + block]]
            lcs = process.cdist(seqs, self._seqs, scorer=LCSseq.similarity, dtype=np.int32, workers=workers)
            m = np.array([len(q) for q in seqs], dtype=np.float64)[:, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                precision, recall = lcs / lengths, lcs / m
                f = np.where(lcs > 0, 2 * precision * recall / (precision + recall), 0.0)
            best = f.argmax(axis=1)
            best_f = f[np.arange(len(seqs)), best]
            items[start : start + len(seqs)] = np.where(best_f > 0, best, -1)
            scores[start : start + len(seqs)] = best_f
        return items, scores

    def check(self, text: str) -> bool:
        """Query, then add the text when it is kept; True when kept."""
        tokens = self.tokenize(text)
        seq = self._encode(tokens)
        match, _ = self._query(seq)
        if match is None:
            self._add(text, tokens, seq)
        return match is None


class _Search:
    """One most_similar call: the best item so far and the items verified."""

    def __init__(self, index: RougeIndex, seq: str, m: int):
        self.seqs, self.seq, self.m = index._seqs, seq, m
        self.best, self.best_f = -1, 0.0
        self.verified = np.empty(0, dtype=np.int64)

    @staticmethod
    def counts(lists: list, pool: int) -> tuple[np.ndarray, np.ndarray]:
        """The items in the posting lists (sorted) and how many of the lists hold each: by sorting
        when the lists are short next to the pool, else by counting over the pool."""
        arrays = [np.frombuffer(p, dtype=np.int32) for p in lists if p]
        if not arrays:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        joined = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        if 4 * len(joined) < pool:
            return np.unique(joined, return_counts=True)
        counts = np.bincount(joined)
        items = np.flatnonzero(counts)
        return items, counts[items]

    def verify(self, items: np.ndarray, all_lengths: np.ndarray) -> None:
        """The exact F of each item (rouge_score's float formula); keep the best, the lowest index
        among equals."""
        others = [self.seqs[i] for i in items.tolist()]
        lcs = process.cdist([self.seq], others, scorer=LCSseq.similarity, dtype=np.int32)[0]
        f = _rouge_f_array(lcs, self.m, all_lengths[items].astype(np.float64))
        top = float(f.max())
        if top > 0 and top >= self.best_f:
            lowest = int(items[f == top].min())
            self.best = lowest if top > self.best_f or self.best < 0 else min(self.best, lowest)
            self.best_f = top
        self.verified = np.concatenate([self.verified, items])
