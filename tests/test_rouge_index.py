"""The ROUGE-L index makes exactly rouge_score's brute-force decisions (Self-Instruct's rule)."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from selfinstruct.filters.rouge_index import RougeIndex
from selfinstruct.filters.tokenizers import rouge_tokens, unicode_tokens

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.exists(), reason="../shared/data is absent")
SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def brute_force(stream, threshold=0.7, tokenizer=rouge_tokens):
    """The reference: each candidate against every kept one, with rouge_score itself."""
    kept_tokens, decisions = [], []
    for text in stream:
        tokens = tokenizer(text)
        scores = [rouge_scorer._score_lcs(tokens, k).fmeasure for k in kept_tokens]
        best = max((s for s in scores if s > threshold), default=0.0)
        decisions.append((best == 0.0, best))
        if best == 0.0:
            kept_tokens.append(tokens)
    return decisions


def indexed(stream, threshold=0.7, tokenizer=rouge_tokens):
    index, decisions = RougeIndex(threshold, tokenizer), []
    for text in stream:
        match, score = index.query(text)
        decisions.append((match is None, score))
        if match is None:
            index.add(text)
    return decisions


def edit(rng: random.Random, text: str) -> str:
    words = text.split()
    op = rng.choice(["drop", "swap", "insert", "case", "punct", "same", "replace"])
    if op == "drop" and len(words) > 1:
        del words[rng.randrange(len(words))]
    elif op == "swap" and len(words) > 1:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    elif op == "insert":
        words.insert(rng.randrange(len(words) + 1), rng.choice(["the", "new", "please", "short", "given"]))
    elif op == "case":
        return text.upper()
    elif op == "punct":
        return text.replace(" ", ", ", 1) + "!"
    elif op == "replace" and words:
        words[rng.randrange(len(words))] = rng.choice(["data", "story", "list", "email"])
    return " ".join(words)


@needs_data
def test_stress_stream_matches_the_reference_count_and_brute_force():
    stream = json.loads((DATA / "stress_stream_5000.json").read_text())["stream"]
    decisions = indexed(stream)
    assert sum(not kept for kept, _ in decisions) == 1624
    assert decisions[:600] == brute_force(stream[:600])


@needs_data
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_alpaca_streams_with_near_duplicate_edits(seed):
    alpaca = [r["instruction"] for r in json.loads((DATA / "alpaca_data_52k.json").read_text())]
    rng = random.Random(seed)
    stream = []
    for _ in range(400):
        if stream and rng.random() < 0.45:
            stream.append(edit(rng, rng.choice(stream)))
        else:
            stream.append(rng.choice(alpaca))
    decisions = indexed(stream)
    assert decisions == brute_force(stream)
    assert sum(not kept for kept, _ in decisions) > 50


def test_pairs_at_the_threshold_follow_the_float_formula():
    """Token lists with an exact LCS around F = 0.7, for every pair of lengths up to 24."""
    checked = exact = 0
    for m in range(1, 25):
        for n in range(1, 25):
            for lcs in range(1, min(m, n) + 1):
                a = [f"a{i}" for i in range(m)]
                b = a[:lcs] + [f"b{i}" for i in range(n - lcs)]
                reference = rouge_scorer._score_lcs(a, b).fmeasure
                index = RougeIndex(0.7, str.split)
                index.add(" ".join(a))
                match, score = index.query(" ".join(b))
                assert (match is not None) == (reference > 0.7), (m, n, lcs)
                assert score == (reference if reference > 0.7 else 0.0)
                checked += 1
                exact += 2 * lcs == 0.7 * (m + n)
    assert checked > 4000 and exact > 0


@needs_data
def test_most_similar_is_the_brute_force_maximum():
    alpaca = [r["instruction"] for r in json.loads((DATA / "alpaca_data_52k.json").read_text())]
    rng = random.Random(7)
    pool, queries = rng.sample(alpaca, 1500), [edit(rng, t) for t in rng.sample(alpaca, 150)]
    index = RougeIndex(0.7)
    for text in pool:
        index.add(text)
    pool_tokens = [rouge_tokens(t) for t in pool]
    for q in queries:
        tokens = rouge_tokens(q)
        scores = [rouge_scorer._score_lcs(tokens, p).fmeasure for p in pool_tokens]
        best = max(scores)
        # the first pool item with the highest F, exactly as rouge_score computes it
        assert index.most_similar(q) == ((scores.index(best), best) if best > 0 else (None, 0.0))


def test_unicode_tokens_see_chinese_near_duplicates():
    spring, autumn = "写一首关于春天的诗", "写一首关于秋天的诗"
    assert indexed([spring, autumn], tokenizer=unicode_tokens) == [(True, 0.0), (False, pytest.approx(8 / 9))]
    assert indexed([spring, autumn], tokenizer=rouge_tokens) == [(True, 0.0), (True, 0.0)]


def test_edge_cases():
    index = RougeIndex(1.0)
    assert index.check("Same text here.") and index.check("Same text here.")  # F <= 1: never above
    index = RougeIndex(0.7)
    assert index.check("") and index.check("!!!")  # no tokens: scores 0 against everything
    assert index.most_similar("anything at all") == (None, 0.0)
    for i in range(3000):  # past several rebuilds of the global order
        index.add(f"task number {i} about topic {i % 7}")
    assert index.query("task number 2999 about topic 3")[0] is not None
    assert index.query("completely unrelated words") == (None, 0.0)
    with pytest.raises(ValueError):
        RougeIndex(0)


def synthetic(rng: random.Random, size: int, fresh_words: int = 2) -> list[str]:
    """Sentences over a skewed vocabulary with some never-seen words, half of them edited copies
    of earlier ones; needs no data files."""
    common = [f"w{i}" for i in range(200)]
    weights = [1 / (i + 1) for i in range(200)]
    stream: list[str] = []
    for k in range(size):
        if stream and rng.random() < 0.5:
            stream.append(edit(rng, rng.choice(stream)))
        else:
            words = rng.choices(common, weights, k=rng.randint(1, 25))
            words += [f"new{k}x{j}" for j in range(rng.randint(0, fresh_words))]
            rng.shuffle(words)
            stream.append(" ".join(words))
    return stream


@pytest.mark.parametrize("seed", [1, 2])
def test_synthetic_streams_match_brute_force_across_rebuilds(seed):
    stream = synthetic(random.Random(seed), 500)
    decisions = indexed(stream)
    assert decisions == brute_force(stream)
    assert 50 < sum(not kept for kept, _ in decisions) < 450


def test_running_out_of_characters_for_new_tokens_rebuilds_the_order():
    rng = random.Random(5)
    stream = synthetic(rng, 150)  # past the first rebuild, then 4,400 new tokens before the next
    stream += [" ".join(f"long{k}x{j}" for j in range(110)) for k in range(40)]
    stream += [edit(rng, rng.choice(stream)) for _ in range(60)]
    index, reserve_rebuilds = RougeIndex(0.7), []
    rebuild = index._rebuild
    index._rebuild = lambda reserve=0: (reserve_rebuilds.append(reserve), rebuild(reserve))
    decisions = []
    for text in stream:
        match, score = index.query(text)
        decisions.append((match is None, score))
        if match is None:
            index.add(text)
    assert any(reserve_rebuilds)
    assert decisions == brute_force(stream)


def test_most_similar_stays_exact_as_the_pool_grows():
    rng = random.Random(11)
    stream = synthetic(rng, 900)
    index, pool_tokens = RougeIndex(0.7), []
    for k, text in enumerate(stream):
        if k in (30, 200, 600, 899):  # the full postings are built at the first call, then kept up
            tokens = rouge_tokens(text)
            scores = [rouge_scorer._score_lcs(tokens, p).fmeasure for p in pool_tokens]
            best = max(scores, default=0.0)
            assert index.most_similar(text) == ((scores.index(best), best) if best > 0 else (None, 0.0))
        index.add(text)
        pool_tokens.append(rouge_tokens(text))


def peak_memory_mb(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run `python -m selfinstruct ARGS` from a fresh process that reports its child's peak RSS."""
    probe = (
        "import json, resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(json.dumps([r.returncode, r.stdout, r.stderr, peak]))"
    )
    cmd = [sys.executable, "-c", probe, sys.executable, "-m", "selfinstruct", *args]
    code, stdout, stderr, kilobytes = json.loads(subprocess.run(cmd, capture_output=True, timeout=300).stdout)
    return subprocess.CompletedProcess(args, code, stdout, stderr), kilobytes / 1024


def test_a_record_of_one_repeated_word_keeps_dedup_memory_linear(tmp_path: Path):
    """300 KB of one word used to cost 4.2 GB: the k-th repeat was a string of k+1 characters."""
    records = [{"instruction": "word " * 60_000}] + [{"instruction": t} for t in NORMAL]
    records.append({"instruction": "word " * 59_000 + "other"})  # a near-duplicate of the long one
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result, peak = peak_memory_mb("dedup", str(path), "-o", str(tmp_path / "out.jsonl"), "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"kept {len(NORMAL) + 1} of {len(NORMAL) + 2}" in result.stdout
    assert peak < 500, f"peak memory {peak:.0f} MB"


def test_a_1_mb_seed_instruction_keeps_seeds_check_bounded(tmp_path: Path):
    seeds = [{"id": "long", "instruction": "word " * 200_000, "instances": [{"input": "", "output": "x"}]}]
    seeds += [{"id": f"s{i}", "instruction": t, "instances": [{"input": "", "output": "x"}]} for i, t in
              enumerate(NORMAL)]  # fmt: skip
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in seeds))
    result, peak = peak_memory_mb("seeds", "check", str(path), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["tasks"] == len(NORMAL) + 1
    assert peak < 500, f"peak memory {peak:.0f} MB"


NORMAL = [
    "Explain why the sky looks blue on a clear afternoon.",
    "List four vegetables that grow well in cold climates.",
    "Write a word puzzle for children about farm animals.",
    "Rewrite this word list as a short poem.",
]


def test_most_similar_breaks_ties_by_the_lowest_index():
    """A small vocabulary makes many pool items tie at the best F (and at the best bound): the
    first of them is the answer, as in a brute-force scan."""
    rng = random.Random(5)
    words = "describe the a list of to explain an".split()
    pool = [" ".join(rng.choices(words, k=rng.randint(2, 7))) for _ in range(400)]
    index = RougeIndex(0.7)
    for text in pool:
        index.add(text)
    pool_tokens = [rouge_tokens(t) for t in pool]
    ties = 0
    for _ in range(60):
        tokens = rng.choices(words, k=rng.randint(2, 7))
        scores = [rouge_scorer._score_lcs(tokens, p).fmeasure for p in pool_tokens]
        best = max(scores)
        ties += scores.count(best) > 1
        assert index.most_similar(" ".join(tokens)) == (scores.index(best), best)
    assert ties > 30
