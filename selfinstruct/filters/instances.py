"""Instance rules applied before an instance enters the dataset (Self-Instruct §2.3)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import numpy as np

from selfinstruct.filters.tokenizers import unicode_tokens
from selfinstruct.prompts import NO_INPUT
from selfinstruct.tasks import Instance

# The bracketed no-input markers of every prompt language ('<none>', '<无>', ...), longest first.
_MARKERS = re.compile(
    "|".join(re.escape(m) for m in sorted(NO_INPUT, key=len, reverse=True) if m.startswith("<")),
    re.IGNORECASE,
)


def is_empty_output(text: str) -> bool:
    """True when nothing is left of an output but whitespace and no-input markers: '<无>',
    '<none> <noinput>', or a bare marker such as '无'."""
    rest = _MARKERS.sub("", text).strip()
    return not rest or rest.lower() in NO_INPUT


def apply_instance_rules(instances: list[Instance], max_instances: int) -> tuple[list[Instance], Counter]:
    """Keep the valid instances of one task; count the dropped ones by reason.

    Drops: empty output (one of nothing but no-input markers, such as '<无>', counts as empty),
    input equal to output, a field ending in ':' (generation stopped early), exact duplicates,
    every instance of a non-empty input that appears with different outputs, and instances past
    max_instances.
    """
    drops: Counter = Counter()
    kept: list[Instance] = []
    seen: set[tuple[str, str]] = set()
    for inst in instances:
        inp, out = inst.input.strip(), inst.output.strip()
        reason = None
        if is_empty_output(out):
            reason = "empty_output"
        elif inp == out:
            reason = "input_equals_output"
        elif inp.endswith(":") or out.endswith(":"):
            reason = "incomplete"
        elif (inp, out) in seen:
            reason = "duplicate_instance"
        if reason:
            drops[reason] += 1
            continue
        seen.add((inp, out))
        kept.append(Instance(input=inp, output=out))

    outputs: dict[str, set[str]] = defaultdict(set)
    for inst in kept:
        outputs[inst.input].add(inst.output)
    conflicting = {inp for inp, outs in outputs.items() if inp and len(outs) > 1}
    if conflicting:
        before = len(kept)
        kept = [i for i in kept if i.input not in conflicting]
        drops["conflicting_outputs"] += before - len(kept)
    if len(kept) > max_instances:
        drops["over_max_instances"] += len(kept) - max_instances
        kept = kept[:max_instances]
    return kept, drops


class NearDuplicateRecords:
    """MinHash-LSH over (instruction + input) across the whole dataset.

    A record is dropped as `near_duplicate` when its estimated Jaccard similarity (token unigrams
    and bigrams) to a record of another task already in the dataset reaches the threshold. Records
    of the same task are left to the instance rules: several outputs for one empty-input task are
    legitimate data. Applied as records arrive, in order, so dataset.jsonl stays append-only.

    The decisions are those of datasketch's MinHash (scheme affine32, sha1_hash32 of each shingle)
    indexed in its MinHashLSH with the same threshold and num_perm; this is datasketch's arithmetic
    done with less overhead per record, which is in the hot path of a run:
    - the sketch is MinHash.update_batch's: each shingle's sha1_hash32 is pre-mixed with the 32-bit
      MurmurHash3 finalizer (datasketch's _fmix), permuted by a * h + b mod 2^32 with the
      MinHash's own (a, b), and the minimum taken per permutation. A shingle's pre-mixed hash is
      cached, since most shingles recur; the tests compare the sketches with MinHash's.
    - the index is MinHashLSH's: the bands are its (b, r) and hashranges, and two records are
      candidates when one of their bands is equal. Each band's key is computed once per record for
      both the query and the insert (MinHashLSH computes them twice, each with a byteswap); the raw
      bytes of a band are as unique a key as the byteswapped ones. A bucket keeps one task id
      instead of the keys: a record enters the index only when every bucket it falls in holds
      records of its own task, so no bucket ever holds two tasks, and a record is a duplicate
      exactly when one of its buckets holds a task other than its own.
    """

    # The cache of shingles' pre-mixed hashes is emptied when it reaches this size (some tens of MB).
    CACHE_SIZE = 1 << 18

    def __init__(self, threshold: float = 0.9, num_perm: int = 128):
        # Imported on use: datasketch's package imports its MinHashLSH, which imports scipy.integrate
        # (0.5 to 1 s), and importing this module (`selfinstruct score` does) needs none of it.
        from datasketch import MinHash, MinHashLSH, sha1_hash32

        self.num_perm = num_perm
        self._sha1_hash32 = sha1_hash32
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)  # its choice of (b, r)
        self.b, self.r = lsh.b, lsh.r
        # Byte offsets of the bands in a sketch's uint32 buffer.
        self._bands = [(start * 4, end * 4) for start, end in lsh.hashranges]
        self._buckets: list[dict[bytes, str]] = [{} for _ in self._bands]
        self._keys: set[str] = set()
        sketch = MinHash(num_perm=num_perm)
        if sketch.scheme != "affine32":
            raise RuntimeError(f"expected datasketch's affine32 MinHash scheme, got {sketch.scheme!r}")
        a, b = sketch.permutations
        self._a, self._b = a.astype(np.uint32), b.astype(np.uint32)
        self._hashes: dict[str, int] = {}
        # The last task's instruction: its tokens and its shingles' sketch (None without tokens). The
        # records of one task share their instruction, which is sketched once: a record's sketch is
        # the elementwise minimum of that and its input's, which is the sketch of the union.
        self._instruction: tuple[str, list[str], np.ndarray | None] = ("", [], None)

    def _sketch(self, shingles: list[str]) -> np.ndarray:
        """MinHash.update_batch's hash values for these shingles from an empty sketch (shingles
        not empty)."""
        cache, sha1_hash32 = self._hashes, self._sha1_hash32
        hashes = list(map(cache.get, shingles))
        if None in hashes:
            if len(cache) >= self.CACHE_SIZE:
                cache.clear()
            for i, h in enumerate(hashes):
                if h is None:
                    s = shingles[i]
                    hashes[i] = cache[s] = _fmix32(sha1_hash32(s.encode()))
        hv = np.array(hashes, dtype=np.uint32)
        phv = np.multiply.outer(hv, self._a)  # uint32: wraps modulo 2^32, as in datasketch
        phv += self._b
        return np.minimum.reduce(phv, axis=0)

    def _minhash(self, instruction: str, input: str) -> np.ndarray | None:
        """The sketch of the unigrams and bigrams of instruction + newline + input."""
        if self._instruction[0] != instruction:
            tokens = unicode_tokens(instruction)
            self._instruction = (instruction, tokens, self._sketch(_shingles(tokens)) if tokens else None)
        _, head, sketched = self._instruction
        tail = unicode_tokens(input)
        shingles = _shingles(tail) + ([f"{head[-1]} {tail[0]}"] if head and tail else [])
        if not shingles:
            return sketched
        sketch = self._sketch(shingles)
        if sketched is not None:
            np.minimum(sketch, sketched, out=sketch)
        return sketch

    def is_duplicate(self, key: str, task_id: str, instruction: str, input: str) -> bool:
        """Check one record; a record that is kept is remembered for the ones after it."""
        sketch = self._minhash(instruction, input)
        if sketch is None:
            return False
        data = sketch.tobytes()
        bands = [data[start:end] for start, end in self._bands]
        for band, bucket in zip(bands, self._buckets, strict=True):
            if bucket.get(band, task_id) != task_id:
                return True
        if key in self._keys:
            raise ValueError("The given key already exists")  # as MinHashLSH.insert
        self._keys.add(key)
        for band, bucket in zip(bands, self._buckets, strict=True):
            bucket[band] = task_id
        return False


def _fmix32(h: int) -> int:
    """datasketch's _fmix for width 32 (the MurmurHash3 finalizer) on one hash value."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def _shingles(tokens: list[str]) -> list[str]:
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)]
