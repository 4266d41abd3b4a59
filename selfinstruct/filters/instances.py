"""Instance rules applied before an instance enters the dataset (Self-Instruct §2.3)."""

from __future__ import annotations

import operator
import re
from collections import Counter, defaultdict

import numpy as np
from datasketch import MinHash, MinHashLSH
from datasketch.hashfunc import sha1_hash32

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
    """

    def __init__(self, threshold: float = 0.9, num_perm: int = 128):
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.num_perm = num_perm
        self._task_of: dict[str, str] = {}
        # One sketch, reset for each record: the index keeps band hashes, not the sketches. It
        # takes shingles already hashed with datasketch's default (sha1_hash32). The records of one
        # task share their instruction, whose shingles are sketched once: a record's sketch is the
        # elementwise minimum of that and its input's, which is the sketch of the union.
        self._sketch = MinHash(num_perm=num_perm, hashfunc=operator.index)
        self._instruction: tuple[str, list[str], np.ndarray | None] = ("", [], None)  # the last task's

    def _minhash(self, instruction: str, input: str) -> MinHash | None:
        """The sketch of the unigrams and bigrams of instruction + newline + input."""
        m = self._sketch
        if self._instruction[0] != instruction:
            tokens = unicode_tokens(instruction)
            m.clear()
            m.update_batch(_hashed(_shingles(tokens)))
            self._instruction = (instruction, tokens, m.hashvalues if tokens else None)
        _, head, sketched = self._instruction
        tail = unicode_tokens(input)
        shingles = _shingles(tail) + ([f"{head[-1]} {tail[0]}"] if head and tail else [])
        if sketched is None and not shingles:
            return None
        if sketched is None:
            m.clear()
        else:
            m.hashvalues = sketched.copy()
        m.update_batch(_hashed(shingles))
        return m

    def is_duplicate(self, key: str, task_id: str, instruction: str, input: str) -> bool:
        """Check one record; a record that is kept is remembered for the ones after it."""
        m = self._minhash(instruction, input)
        if m is None:
            return False
        if any(self._task_of[k] != task_id for k in self.lsh.query(m)):
            return True
        self.lsh.insert(key, m)
        self._task_of[key] = task_id
        return False


def _hashed(shingles: list[str]) -> set[int]:
    return {sha1_hash32(s.encode()) for s in shingles}


def _shingles(tokens: list[str]) -> list[str]:
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)]
