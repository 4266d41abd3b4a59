"""`selfinstruct score`: rate every record of an instruction file with the run's LLM judge.

    python -m selfinstruct score data.json -o scored.jsonl
    python -m selfinstruct score data.json -o scored.jsonl --min-score 4 \\
        --backend openai --base-url http://localhost:8000/v1

The rubric, prompt, output format and parser are the JUDGE stage's (selfinstruct.stages), the model
is reached as `run` reaches it (the embedded model by default; a server started here is stopped at
the end), and the settings are the run's flags. Each record gets `score` (1-5) and `score_reason`.

Files beside OUTPUT:
- OUTPUT.responses.jsonl: every judge answer, appended the moment it arrives (the response cache,
  keyed by model, prompt, sampling and the record's id);
- OUTPUT.score.json: the settings and a hash of the records, written first; the counts at the end.
OUTPUT itself is written once, whole, when every record has its answer, in input order. A score
that is stopped leaves the cache and no partial OUTPUT; the same command again replays the cache,
sends only the requests still missing and writes OUTPUT, so no request is paid twice and no line is
written twice. Settings that only choose among the same answers (--min-score, --judge-unparsed) or
say how to reach the endpoint may change between runs; others are refused (docs/judge.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfinstruct import interrupts
from selfinstruct.cache import ResponseCache, request_key
from selfinstruct.config import Sampling, ScoreConfig, load_config
from selfinstruct.errors import EndpointError, UserError
from selfinstruct.filters.tokenizers import detect_language
from selfinstruct.generation.backends import (
    REACHING_THE_ENDPOINT,
    Endpoint,
    check_backend,
    client_for,
    open_endpoint,
)
from selfinstruct.generation.client import Completion, LLMClient
from selfinstruct.judge import Judgement
from selfinstruct.locking import exclusive
from selfinstruct.progress import Progress
from selfinstruct.runner import differences, served_model
from selfinstruct.sources import load_source
from selfinstruct.stages import JUDGE
from selfinstruct.stats import RunStats
from selfinstruct.tasks import atomic_file, jsonl_line, write_json_atomic

log = logging.getLogger(__name__)


# Settings that may differ on a rerun: they choose among the same answers, or say how to reach the
# endpoint, and change no answer.
RESUMABLE_CHANGES = {
    "concurrency",
    "min_score",
    "unparsed",
    *REACHING_THE_ENDPOINT,
}


@dataclass(frozen=True)
class ScorePaths:
    output: Path

    def beside(self, suffix: str) -> Path:
        return self.output.with_name(self.output.name + suffix)

    @property
    def responses(self) -> Path:
        return self.beside(".responses.jsonl")

    @property
    def settings(self) -> Path:
        return self.beside(".score.json")

    @property
    def server_log(self) -> Path:
        return self.beside(".vllm_server.log")


@dataclass
class Scored:
    """What a score did: the lines of OUTPUT, the counts, and the tokens every record's answer took
    (answers replayed from the cache included: what judging the file costs)."""

    rows: list[dict[str, Any]]
    stats: RunStats
    prompt_tokens: int = 0
    completion_tokens: int = 0
    records: int = 0


def score(
    input_path: Path,
    output: Path,
    config_path: Path | None,
    overrides: dict[str, Any],
    flag_names: dict[str, str],
    progress: bool = True,
    overwrite: bool = False,
) -> int:
    # Check every input before anything slow starts.
    config: ScoreConfig = load_config(config_path, overrides, flag_names, ScoreConfig, "score")
    records = [_record_fields(r) for r in load_source(input_path).records.to_dict("records")]
    if config.language == "auto":
        config.language = detect_language([r["instruction"] for r in records])
    check_backend(config.backend)
    paths = ScorePaths(Path(output))
    _check_output(paths.output, Path(input_path))
    inputs = {"path": str(input_path), "records": len(records), "records_sha256": records_sha256(records)}
    with exclusive(paths.output, "score"):
        prepare_output(paths, config, inputs["records_sha256"], overwrite)
        write_json_atomic(paths.settings, settings_dict(config, inputs))
        try:
            with open_endpoint(config.backend, paths.server_log, config.seed) as endpoint:
                scored = interrupts.run_async(_score(config, endpoint, records, inputs, paths, progress))
        except interrupts.Interrupted:
            print(
                f"the judge's answers so far are kept in {paths.responses}: the same command again sends "
                "only the requests still missing",
                file=sys.stderr,
            )
            raise
        with atomic_file(paths.output, binary=True) as f:
            for row in scored.rows:
                f.write(jsonl_line(row))
        write_json_atomic(paths.settings, settings_dict(config, inputs) | {"summary": summary_dict(scored)})
    print(summary_line(scored, paths.output))
    return 0


def _record_fields(record: dict[str, Any]) -> dict[str, Any]:
    """A source record as OUTPUT writes it, before its score: the dataset.jsonl field order, and
    is_classification only where the source says it."""
    row = {k: record[k] for k in ("instruction", "input", "output")} | {"id": str(record["id"])}
    flag = record.get("is_classification")
    if flag in (True, False):
        row["is_classification"] = bool(flag)
    return row


def records_sha256(records: list[dict[str, Any]]) -> str:
    """One hash of the records' content, whatever file layout or path they came from."""
    return hashlib.sha256(json.dumps(records, ensure_ascii=False).encode()).hexdigest()


def settings_dict(config: ScoreConfig, inputs: dict[str, Any]) -> dict[str, Any]:
    """OUTPUT.score.json: the resolved settings (no secrets are part of them) and what was read:
    the input's path, its number of records and their hash."""
    return config.model_dump(mode="json") | {"inputs": inputs}


def _check_output(output: Path, input_path: Path) -> None:
    if output.is_dir():
        raise UserError(f"{output}: is a folder — pass -o with a file path; nothing was changed")
    if output.exists() and input_path.exists() and output.samefile(input_path):
        raise UserError(f"{output}: is the file being scored — pass -o with a new path; nothing was changed")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"{output}: cannot create its folder ({exc.strerror}) — choose another path"
        ) from None


def prepare_output(paths: ScorePaths, config: ScoreConfig, sha256: str, overwrite: bool) -> None:
    """Start afresh (nothing there, or --overwrite), or check that what is there is a score of these
    records with these settings: a resume. Anything else is refused and left as it is."""
    ours = (paths.output, paths.responses, paths.settings)
    if overwrite:
        for path in ours:
            path.unlink(missing_ok=True)
        return
    if not paths.settings.exists():
        found = [p for p in (paths.output, paths.responses) if p.exists()]
        if found:
            raise UserError(
                f"{found[0]}: exists and was not written by `score` (no {paths.settings.name} beside it) "
                "— pass -o with a new path, or --overwrite to replace it; nothing was changed"
            )
        return
    saved = _read_settings(paths.settings)
    if config.backend.model is None:  # the served model a score found is saved under its name
        config.backend.model = saved.get("backend", {}).get("model")
    again = "pass -o with a new path, or --overwrite to score again from nothing; nothing was changed"
    if saved.get("inputs", {}).get("records_sha256") != sha256:
        raise UserError(f"{paths.output}: holds the scores of other records (the input changed) — {again}")
    current = config.model_dump(mode="json")
    saved = {k: v for k, v in saved.items() if k not in ("inputs", "summary")}
    changed = [k for k in differences(saved, current) if k not in RESUMABLE_CHANGES]
    if changed:
        raise UserError(
            f"{paths.output}: was scored with other settings ({', '.join(changed)}) — resume it with the "
            f"same settings, or {again}"
        )


def _read_settings(path: Path) -> dict[str, Any]:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        saved = None
    if not isinstance(saved, dict):
        raise UserError(
            f"{path}: not a JSON object of settings — restore it, or pass --overwrite to score again from "
            "nothing"
        )
    return saved


async def _score(
    config: ScoreConfig,
    endpoint: Endpoint,
    records: list[dict],
    inputs: dict[str, Any],
    paths: ScorePaths,
    progress: bool,
) -> Scored:
    """Open the client, then rate every record; a server this command started and that died is what
    an endpoint error is reported as."""
    backend = config.backend
    client = client_for(endpoint, backend)
    cache = ResponseCache(paths.responses)
    try:
        client.model = served_model(await client.list_models(), endpoint.model)
        if backend.model != client.model:  # so that the settings say which model answered
            backend.model = client.model
            write_json_atomic(paths.settings, settings_dict(config, inputs))
        log.info("judge: model %s at %s", client.model, ", ".join(endpoint.base_urls))
        return await rate_all(config, client, records, cache, progress)
    except EndpointError:
        if endpoint.server is not None:
            endpoint.server.check_alive()
        raise
    finally:
        cache.close()
        await client.close()


async def rate_all(
    config: ScoreConfig, client: LLMClient, records: list[dict], cache: ResponseCache, progress: bool
) -> Scored:
    """Every record's judgement, `concurrency` requests at a time; the rows to write in input order.
    One request failing past its retries stops the others (the answers so far stay in the cache)."""
    stats = RunStats(target=len(records))
    scored = Scored([], stats, records=len(records))
    display = Progress(stats, enabled=progress)
    semaphore = asyncio.Semaphore(config.concurrency)
    judgements: list[Judgement | None] = [None] * len(records)
    dropped = [False] * len(records)

    async def rate(n: int, record: dict) -> None:
        prompt = JUDGE.prompt(record["instruction"], record["input"], record["output"], lang=config.language)
        completion = await ask(client, cache, config.judge, prompt, record["id"], stats, semaphore)
        judgements[n] = JUDGE.read(prompt, completion.text, completion.truncated, client.api)
        scored.prompt_tokens += completion.prompt_tokens
        scored.completion_tokens += completion.completion_tokens
        drop = stats.count_judgement(judgements[n], config.min_score, config.unparsed)
        if drop:
            stats.rejected[drop] += 1
            dropped[n] = True
        display.advance("score")

    with display.stage("score", len(records), unit="record"):
        try:
            async with asyncio.TaskGroup() as group:
                for n, record in enumerate(records):
                    group.create_task(rate(n, record))
        except ExceptionGroup as exc:  # the first failure, as one line where it is a UserError
            raise exc.exceptions[0] from None
    for record, judgement, drop in zip(records, judgements, dropped, strict=True):
        if drop:
            continue
        score, reason = (judgement.score, judgement.reason) if judgement else (None, None)
        scored.rows.append(record | {"score": score, "score_reason": reason})
    return scored


async def ask(
    client: LLMClient,
    cache: ResponseCache,
    sampling: Sampling,
    prompt: str,
    index: str,
    stats: RunStats,
    semaphore: asyncio.Semaphore,
) -> Completion:
    """The judge's answer to one prompt: from the cache when an earlier score paid for it, else
    asked (and cached the moment it arrives)."""
    key = request_key(client.model, prompt, sampling, JUDGE.stop, index)
    cached = cache.get(key)
    if cached is not None:
        stats.replayed += 1
        return cached
    async with semaphore:
        stats.in_flight += 1
        try:
            completion = await client.complete(prompt, sampling, JUDGE.stop, JUDGE.response_format)
        finally:
            stats.in_flight -= 1
    cache.put(key, JUDGE.name, index, completion)
    stats.count_response(JUDGE.name, completion)
    return completion


def summary_dict(scored: Scored) -> dict[str, Any]:
    s = scored.stats
    return {
        "records": scored.records,
        "written": len(scored.rows),
        "low_score": s.judge["low_score"],
        "unparsed": s.judge["unparsed"],
        "scores": {str(k): s.scores[k] for k in range(1, 6)},
        "tokens": {"prompt": scored.prompt_tokens, "completion": scored.completion_tokens},
        "requests_sent": s.requests[JUDGE.name],
        "replayed": s.replayed,
        "wall_seconds": round(s.elapsed, 1),
    }


def summary_line(scored: Scored, output: Path) -> str:
    """The line a score ends with: what was written, the histogram, the cost, the time."""
    d = summary_dict(scored)
    histogram = " ".join(f"{k}:{n}" for k, n in d["scores"].items())
    tokens = scored.prompt_tokens + scored.completion_tokens
    per_record = tokens / scored.records if scored.records else 0.0
    return (
        f"scored {d['records']} records, wrote {d['written']} to {output} "
        f"(low_score {d['low_score']}, unparsed {d['unparsed']}); scores {histogram}; "
        f"{tokens:,} tokens ({per_record:.0f} per record), {d['requests_sent']} requests sent, "
        f"{d['replayed']} answers replayed; {d['wall_seconds']:.0f} s"
    )
