"""`selfinstruct dedup`: the novelty filter on a file, in order, in the input's own format."""

import json
import os
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


def test_a_byte_order_mark_is_not_part_of_the_text(tmp_path: Path):
    """A JSON array or JSONL file saved with a BOM reads as JSON, with the same decisions."""
    (tmp_path / "in.json").write_text("\ufeff" + json.dumps([{"instruction": t} for t in TEXTS[:5]]))
    (tmp_path / "in.jsonl").write_text(
        "\ufeff" + "".join(json.dumps({"instruction": t}) + "\n" for t in TEXTS[:5])
    )
    for name in ("in.json", "in.jsonl"):
        result = dedup(str(tmp_path / name), "-o", str(tmp_path / f"out-{name}"), "--tokenizer", "rouge")
        assert result.returncode == 0, result.stderr
    assert [r["instruction"] for r in json.loads((tmp_path / "out-in.json").read_text())] == reference(
        TEXTS[:5]
    )
    lines = (tmp_path / "out-in.jsonl").read_text().splitlines()
    assert (
        [json.loads(ln)["instruction"] for ln in lines]
        == reference(TEXTS[:5])
        == [TEXTS[i] for i in (0, 2, 3)]
    )


def test_rejected_on_the_output_is_refused_before_reading(tmp_path: Path):
    out = tmp_path / "out.jsonl"
    result = dedup(
        str(tmp_path / "not-read.jsonl"), "-o", str(out), "--rejected", str(tmp_path / "." / "out.jsonl")
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: --rejected {tmp_path / '.' / 'out.jsonl'} is the same file as -o {out} — "
        "give the dropped records a path of their own"
    )
    assert not out.exists()


def test_output_into_missing_folders(tmp_path: Path):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS[:3]) + "\n")
    out, rej = tmp_path / "new" / "deeper" / "out.txt", tmp_path / "other" / "rej.jsonl"
    result = dedup(str(src), "-o", str(out), "--rejected", str(rej), "--tokenizer", "rouge")
    assert result.returncode == 0, result.stderr
    assert out.read_text().splitlines() == [TEXTS[0], TEXTS[2]]
    assert [json.loads(ln)["record"] for ln in rej.read_text().splitlines()] == [TEXTS[1]]
    (tmp_path / "a-file").write_text("keep me")
    result = dedup(str(src), "-o", str(tmp_path / "a-file" / "out.txt"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "a-file/out.txt: cannot create its folder" in result.stderr
    assert (tmp_path / "a-file").read_text() == "keep me"


def test_an_output_another_process_writes_is_refused(tmp_path: Path):
    from selfinstruct.locking import exclusive

    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS[:3]) + "\n")
    out = tmp_path / "out.txt"
    with exclusive(out, "dedup"):
        result = dedup(str(src), "-o", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{out}: in use by process {os.getpid()} (selfinstruct dedup)" in result.stderr
    assert not out.exists()
    out.write_text("keep me\n")  # the lock is taken before the "already exists" check, and then released
    result = dedup(str(src), "-o", str(out))
    assert result.returncode == 2 and f"{out}: already exists" in result.stderr
    assert out.read_text() == "keep me\n"
