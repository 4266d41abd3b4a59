"""`selfinstruct report`: Table 1 against an independent count, report.json against stats.json, and an
HTML page that holds its figures inline and asks the network for nothing."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
from clirun import selfinstruct
from fast_endpoint import FastEndpoint

from selfinstruct.report import build_report

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")


def words(text: str) -> int:
    """Independent of the report's counter: CJK characters one word each, the rest split on spaces."""
    return len(CJK.findall(text)) + len(CJK.sub(" ", text).split())


def expected_table1(instructions: list[str], flags: list | None, records: list[dict]) -> dict:
    inputs = [r.get("input") or "" for r in records]
    nonempty = [x for x in inputs if x.strip()]

    def mean(texts):
        return round(sum(map(words, texts)) / len(texts), 2) if texts else None

    return {
        "instructions": len(instructions),
        "classification_instructions": None if flags is None else sum(flags),
        "instances": len(records),
        "empty_input_instances": len(inputs) - len(nonempty),
        "avg_words": {
            "instruction": mean(instructions),
            "input_nonempty": mean(nonempty),
            "output": mean([r["output"] for r in records]),
        },
    }


def table1_of(report: dict) -> dict:
    keys = ["instructions", "classification_instructions", "instances", "empty_input_instances", "avg_words"]
    return {k: report[k] for k in keys}


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class _Page(HTMLParser):
    """Every tag and attribute of a page, and the text of its style elements."""

    def __init__(self):
        super().__init__()
        self.tags: Counter = Counter()
        self.attributes: list[tuple[str, str, str]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags[tag] += 1
        self.attributes += [(tag, name, value or "") for name, value in attrs]
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


REMOTE = re.compile(r"^\s*(https?:|ftp:|//|file:)", re.I)


def check_offline_page(path: Path, figures: int) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert page.tags["svg"] >= figures
    for tag in ("script", "link", "img", "iframe", "object", "embed", "audio", "video", "source", "base"):
        assert page.tags[tag] == 0, tag
    for tag, name, value in page.attributes:
        if name in ("src", "href", "xlink:href", "srcset", "action", "data", "poster", "background"):
            assert not REMOTE.match(value), (tag, name, value)
        assert "url(" not in value or not re.search(r"url\(\s*['\"]?(https?:|//)", value), (tag, value)
    css = " ".join(page.styles)
    assert "@import" not in css and not re.search(r"url\(\s*['\"]?(https?:|//)", css)
    return page


# A run of the instant endpoint: every stage, in a second -----------------------------------------
@pytest.fixture(scope="module")
def fast_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fast") / "run"
    with FastEndpoint(seed=4, items=5) as endpoint:
        result = selfinstruct(
            "run", "--backend", "openai", "--base-url", endpoint.url, "--model", "fast-model",
            "-n", "120", "-o", str(out), "--seed", "2", "--no-progress",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def check_run_report(run: Path, out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    machine = jsonl(run / "machine_instructions.jsonl")
    verdicts = {r["id"]: r["is_classification"] for r in jsonl(run / "classification.jsonl")}
    flags = [verdicts[r["id"]] for r in machine]
    dataset = jsonl(run / "dataset.jsonl")
    assert table1_of(report) == expected_table1([r["instruction"] for r in machine], flags, dataset)
    stats = json.loads((run / "stats.json").read_text())
    assert report["rejected"] == stats["instructions"]["rejected"]
    funnel = report["funnel"]
    assert funnel["accepted"] == stats["instructions"]["accepted"] == report["instructions"]
    assert funnel["candidates"] == stats["instructions"]["candidates"]
    assert funnel["classification"] == stats["classification"]
    assert funnel["instances"] == {
        k: stats["instances"][k] for k in ("tasks", "generated", "kept", "dropped")
    }
    assert funnel["instances"]["kept"] == stats["dataset_records"] == report["instances"]
    assert funnel["requests"] == stats["requests"] and funnel["tokens"] == stats["tokens"]
    points = report["novelty_yield"]["points"]
    assert points[-1][0] == funnel["candidates"] and all(0 <= y <= 1 for _, y in points)
    rouge = report["rouge_to_seed"]
    assert 0 < rouge["mean"] < 1 and sum(rouge["histogram"]["counts"]) == len(machine)
    return report


def test_report_of_a_run_matches_its_files_and_stats(fast_run: Path, tmp_path: Path):
    out = tmp_path / "report"
    result = selfinstruct("report", str(fast_run), "-o", str(out), "--sample", "7", "--seed", "5")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "report.html" in result.stdout
    report = check_run_report(fast_run, out)
    assert report["verb_noun"]["parsed"] == report["instructions"]
    check_offline_page(out / "report.html", figures=6)
    with open(out / "review_sample.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 and list(rows[0]) == [
        "id", "instruction", "input", "output",
        "valid_instruction", "appropriate_input", "correct_output", "all_valid",
    ]  # fmt: skip
    dataset = {r["id"]: r for r in jsonl(fast_run / "dataset.jsonl")}
    assert all(dataset[r["id"]]["output"] == r["output"] and not r["all_valid"] for r in rows)
    again = tmp_path / "again"
    assert (
        selfinstruct("report", str(fast_run), "-o", str(again), "--sample", "7", "--seed", "5").returncode
        == 0
    )
    assert (again / "review_sample.csv").read_bytes() == (out / "review_sample.csv").read_bytes()


def test_report_of_each_file_layout(fast_run: Path, tmp_path: Path):
    dataset = jsonl(fast_run / "dataset.jsonl")
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{k: r[k] for k in ("instruction", "input", "output")} for r in dataset]))
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(
        json.dumps({"messages": [{"role": "user", "content": r["instruction"]},
                                 {"role": "assistant", "content": r["output"]}]}) + "\n"
        for r in dataset
    ))  # fmt: skip
    distinct = list(dict.fromkeys(r["instruction"] for r in dataset))
    by_instruction = {r["instruction"]: r["is_classification"] for r in dataset}
    cases = {
        fast_run / "dataset.jsonl": expected_table1(distinct, [by_instruction[i] for i in distinct], dataset),
        alpaca: expected_table1(distinct, None, dataset),
        chat: expected_table1(distinct, None, [{"input": "", "output": r["output"]} for r in dataset]),
    }
    for path, expected in cases.items():
        report = build_report(path, tmp_path / f"{path.name}-report", sample=3).report
        assert table1_of(report) == expected, path.name
        assert report["rejected"] is None and report["funnel"] is None


def test_report_of_the_shipped_seeds(tmp_path: Path):
    seeds = Path(__file__).resolve().parents[1] / "seeds" / "en.jsonl"
    tasks = jsonl(seeds)
    records = [i for t in tasks for i in t["instances"]]
    report = build_report(seeds, tmp_path / "r", sample=0).report
    flags = [t["is_classification"] for t in tasks]
    assert table1_of(report) == expected_table1([t["instruction"] for t in tasks], flags, records)
    assert report["rouge_to_seed"]["mean"] == 1.0  # every seed is its own nearest seed


def test_bad_input_is_one_line_and_overwrites_nothing(fast_run: Path, tmp_path: Path):
    no_instruction = tmp_path / "prompts.jsonl"
    no_instruction.write_text('{"prompt": "a", "completion": "b"}\n')
    out = tmp_path / "taken"
    out.mkdir()
    (out / "report.html").write_text("mine")
    cases = {
        (str(tmp_path / "missing.json"),): "not found",
        (str(no_instruction),): "prompts.jsonl:1: no 'instruction' field",
        (str(tmp_path),): "not a run directory",
        (str(fast_run), "-o", str(out)): "already holds report.html",
        (str(fast_run), "--sample", "-3"): "--sample",
    }
    for args, message in cases.items():
        result = selfinstruct("report", *args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert (out / "report.html").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]


# Real data, when ../shared/data is there ---------------------------------------------------------
def shared(name: str) -> Path:
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is not there")
    return path


def test_report_of_alpaca_matches_an_independent_count(tmp_path: Path):
    path = shared("alpaca_data_52k.json")
    data = json.loads(path.read_text())
    report = build_report(path, tmp_path / "r", sample=20).report
    distinct = list(dict.fromkeys(r["instruction"] for r in data))
    assert table1_of(report) == expected_table1(distinct, None, data)
    assert report["instances"] == 52002 and report["classification_instructions"] is None
    vn = report["verb_noun"]
    assert vn["parsed"] == len(distinct) == 52002 and 0.75 < vn["coverage"] < 0.78
    assert [v for v, _ in vn["verbs"][:4]] == ["generate", "create", "write", "describe"]
    assert vn["top"][0][:2] == ["generate", "list"] and len(vn["verbs"]) == 20 and len(vn["top"]) == 80
    check_offline_page(tmp_path / "r" / "report.html", figures=5)


def test_report_of_chinese_data_says_there_is_no_parser(tmp_path: Path):
    path = shared("alpaca_zh_carbonz0_part00.json")
    data = json.loads(path.read_text())
    report = build_report(path, tmp_path / "r", sample=5).report
    assert report["source"]["language"] == "zh"
    distinct = list(dict.fromkeys(r["instruction"] for r in data))
    assert table1_of(report) == expected_table1(distinct, None, data)
    assert report["verb_noun"]["coverage"] is None and report["verb_noun"]["top"] == []
    assert "zh" in report["verb_noun"]["note"]
    assert report["rouge_to_seed"]["tokenizer"] == "unicode"
    assert "No dependency parser is installed" in (tmp_path / "r" / "report.html").read_text()


# The real embedded model ---------------------------------------------------------------------------
@pytest.mark.slow
def test_report_of_an_embedded_run(embedded_run: Path, tmp_path: Path):
    out = tmp_path / "report"
    result = selfinstruct("report", str(embedded_run), "-o", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    check_run_report(embedded_run, out)
    check_offline_page(out / "report.html", figures=5)
