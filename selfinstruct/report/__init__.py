"""`python -m selfinstruct report`: the paper's Table 1 and figures for a run or an instruction file.

Writes DIR/report.json (the figures for machines), DIR/report.html (one page that opens offline)
and DIR/review_sample.csv (records to audit by hand). See docs/report.md.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfinstruct import __version__
from selfinstruct.errors import UserError
from selfinstruct.filters.tokenizers import detect_language
from selfinstruct.fingerprints import file_sha256
from selfinstruct.locking import exclusive
from selfinstruct.resources import resource_path
from selfinstruct.sources import Source, load_source
from selfinstruct.tasks import atomic_file, load_seeds

log = logging.getLogger(__name__)

OUTPUTS = ("report.json", "report.html", "review_sample.csv")


@dataclass
class ReportResult:
    out_dir: Path
    report: dict[str, Any]
    seconds: float


def default_out_dir(path: Path) -> Path:
    """RUN_DIR/report for a run directory, else FILE_STEM-report beside the file."""
    path = Path(path)
    return path / "report" if path.is_dir() else path.with_name(f"{path.stem}-report")


def build_report(
    path: Path,
    out_dir: Path | None = None,
    seeds: Path | None = None,
    sample: int = 50,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> ReportResult:
    started = time.monotonic()
    if sample < 0:
        raise UserError(f"--sample: {sample} is negative — pass the number of records to review, e.g. 50")
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(path)
    source = load_source(path)
    loaded = time.monotonic() - started
    if source.records.empty and source.instructions.empty:
        raise UserError(f"{path}: holds no instructions yet — nothing to report")
    _check_outputs(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(out_dir, "selfinstruct report"):
        report, review = compute(source, seeds, sample, seed, progress)
        report["seconds"] = {"load": round(loaded, 3), **report["seconds"]}
        clock = time.monotonic()
        _write(out_dir, report, review)
        report["seconds"]["write"] = round(time.monotonic() - clock, 3)
    return ReportResult(out_dir, report, time.monotonic() - started)


def _check_outputs(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a directory — pass -o with a new directory")
    existing = [name for name in OUTPUTS if (out_dir / name).exists()]
    if existing and not overwrite:
        raise UserError(
            f"{out_dir}: already holds {', '.join(existing)} — pass --overwrite to replace it, or -o with "
            "a new directory; nothing was changed"
        )


def compute(source: Source, seeds: Path | None, sample: int, seed: int, progress: bool = False):
    """report.json's content and the review sample, from a loaded source."""
    from selfinstruct.report import measures
    from selfinstruct.report.verbs import verb_noun

    instructions = source.instructions["instruction"].tolist()
    language = _language(source, instructions)
    report: dict[str, Any] = {
        "source": {
            "path": str(source.path),
            "name": source.path.name,
            "layout": source.layout,
            "language": language,
        },
        "generated_by": f"selfinstruct {__version__}",
    }
    seconds: dict[str, float] = {}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        seconds[name] = round(now - clock, 3)
        clock = now

    report |= measures.table1(source)
    funnel = measures.funnel(source)
    report["rejected"] = funnel["rejected"] if funnel else None
    report["funnel"] = funnel
    report["novelty_yield"] = measures.novelty_yield(source)
    if source.run is not None and source.run.stats is not None:
        report["stats"] = source.run.stats
    lap("table1_and_funnel")
    log.info("ROUGE-L of %d instructions to the nearest seed", len(instructions))
    report["rouge_to_seed"] = _rouge(source, instructions, language, seeds)
    lap("rouge_to_seed")
    report["lengths"] = measures.length_histograms(source)
    lap("lengths")
    log.info("parsing %d instructions for verbs and their objects", len(instructions))
    report["verb_noun"] = verb_noun(instructions, language, progress=progress).to_dict()
    lap("verb_noun")
    review = measures.review_sample(source, sample, seed)
    report["sample"] = {"size": len(review), "seed": seed, "csv": "review_sample.csv"}
    report["seconds"] = seconds
    return report, review


def _language(source: Source, instructions: list[str]) -> str:
    if source.run is not None and source.run.config.get("language") in ("en", "zh"):
        return source.run.config["language"]
    return detect_language(instructions[:5000])


def _rouge(source: Source, instructions: list[str], language: str, seeds: Path | None) -> dict[str, Any]:
    from selfinstruct.report.measures import rouge_to_seed

    if seeds is None and source.run is not None:
        seeds = Path(source.run.config.get("seeds", ""))
        if not seeds.is_file():
            return {"mean": None, "histogram": None, "note": f"The run's seed file {seeds} is not there."}
        saved = source.run.config.get("inputs", {}).get("seeds_sha256")
        changed = saved is not None and saved != file_sha256(seeds)
    else:
        seeds = Path(seeds) if seeds is not None else resource_path(f"seeds/{language}.jsonl")
        changed = False
    seed_texts = [task.instruction for task in load_seeds(seeds)]
    result = rouge_to_seed(instructions, seed_texts)
    result["seeds_file"] = str(seeds)
    result["seeds_sha256"] = file_sha256(seeds)
    if changed:
        result["note"] = (
            f"{seeds} changed since the run started: these scores are against its current content."
        )
    return result


def _write(out_dir: Path, report: dict[str, Any], review) -> None:
    from selfinstruct.report.html import render

    with atomic_file(out_dir / "review_sample.csv") as f:
        review.to_csv(f, index=False)
    with atomic_file(out_dir / "report.json") as f:
        json.dump(report, f, ensure_ascii=False, indent=2)
        f.write("\n")
    page = render(report, review, "review_sample.csv")
    with atomic_file(out_dir / "report.html") as f:
        f.write(page)
