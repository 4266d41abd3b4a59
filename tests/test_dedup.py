"""`selfinstruct dedup`: the novelty filter on a file, in order, in the input's own format."""

import json
import subprocess
from pathlib import Path

from clirun import selfinstruct
from rouge_score import rouge_scorer

TEXTS = [
    "Summarize the article in two sentences.",
    "Summarize the article in three sentences.",  # near-duplicate of the first
    "List four vegetables that grow well in cold climates.",
    "Explain why the sky looks blue on a clear afternoon.",
    "Explain why the sky looks blue on a clear day.",  # near-duplicate
    "写一首关于春天的诗",
    "写一首关于秋天的诗",  # a near-duplicate only the Unicode tokenizer sees
]


def dedup(*args: str) -> subprocess.CompletedProcess:
    return selfinstruct("dedup", "--no-progress", *args)


def reference(texts, threshold=0.7):
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    kept = []
    for t in texts:
        if all(scorer.score(k, t)["rougeL"].fmeasure <= threshold for k in kept):
            kept.append(t)
    return kept


def test_jsonl_in_order_with_rejected_records(tmp_path: Path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"instruction": t, "n": i}) + "\n" for i, t in enumerate(TEXTS)))
    result = dedup(str(src), "-o", str(tmp_path / "out.jsonl"), "--rejected", str(tmp_path / "rej.jsonl"),
                   "--tokenizer", "rouge")  # fmt: skip
    assert result.returncode == 0, result.stderr
    kept = [json.loads(ln) for ln in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["instruction"] for r in kept] == reference(TEXTS)
    assert [r["n"] for r in kept] == sorted(r["n"] for r in kept)
    rejected = [json.loads(ln) for ln in (tmp_path / "rej.jsonl").read_text().splitlines()]
    assert [r["record"]["n"] for r in rejected] == [1, 4]
    assert rejected[0]["most_similar"] == TEXTS[0] and rejected[0]["similarity"] > 0.7


def test_text_lines_with_the_unicode_tokenizer(tmp_path: Path):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    result = dedup(str(src), "-o", str(tmp_path / "out.txt"), "--tokenizer", "unicode")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.txt").read_text().splitlines() == [TEXTS[i] for i in (0, 2, 3, 5)]


def test_json_array_against_seeds(tmp_path: Path):
    src = tmp_path / "in.json"
    src.write_text(json.dumps([{"prompt": t} for t in TEXTS[2:5]]))
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        json.dumps({"instruction": "Name four vegetables that grow well in cold climates.", "output": "-"})
        + "\n"
    )
    result = dedup(str(src), "-o", str(tmp_path / "out.json"), "--field", "prompt", "--against", str(seeds))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out.json").read_text()) == [{"prompt": TEXTS[3]}]


def test_errors_name_the_line_and_never_overwrite(tmp_path: Path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"instruction": "Add two numbers."}\n{"text": "no instruction"}\n')
    out = tmp_path / "out.jsonl"
    result = dedup(str(src), "-o", str(out))
    assert result.returncode == 2 and "in.jsonl:2: no text field 'instruction'" in result.stderr
    out.write_text("keep me\n")
    src.write_text('{"instruction": "Add two numbers."}\n')
    result = dedup(str(src), "-o", str(out))
    assert result.returncode == 2 and "already exists" in result.stderr
    assert out.read_text() == "keep me\n"
