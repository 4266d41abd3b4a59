"""The record of every file in a run directory, declared once.

The pipeline, the response cache and the run counts write through these models (build one, write
its `model_dump()`: the JSON on disk is the models' fields, in their order); `report` and `export`
read through `read_run_file` and `read_stats`, which never change a run directory, so they are
safe to use while a run is still writing it.

The JSONL files are append-only, one record per line (`selfinstruct.tasks.JsonlWriter`);
stats.json is rewritten whole, atomically, as the run goes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from selfinstruct.errors import UserError, first_error
from selfinstruct.tasks import Instance, read_text, scan_jsonl

log = logging.getLogger(__name__)


class _Record(BaseModel):
    """A record the pipeline writes. Strict (what is read is what was written, never coerced) and
    closed (an unknown key is an error)."""

    model_config = ConfigDict(strict=True, extra="forbid")


class MachineInstruction(_Record):
    """An instruction that passed every filter and joined the pool (machine_instructions.jsonl)."""

    id: str = Field(
        description="Task id, `machine_task_<n>` with n counting accepted instructions from 0; the "
        "classification, instance and dataset records of the task carry it."
    )
    instruction: str = Field(description="The instruction, as parsed out of the model's numbered list.")
    most_similar: str | None = Field(
        description="The pool instruction (seed or machine) closest to it by ROUGE-L when it was "
        "accepted; None when no pool instruction shares a token with it."
    )
    similarity: float = Field(
        description="ROUGE-L F-measure against most_similar, rounded to 4 places (0.0 without one)."
    )
    request: int = Field(
        description="Number of the instruction request whose response held it: the `index` of that "
        "response in responses.jsonl."
    )


def _absent(value) -> bool:
    return value is None


class Rejected(_Record):
    """A candidate instruction that was dropped, with the reason (rejected.jsonl).

    most_similar and similarity are written only for `too_similar`, the ROUGE-L filter's reason.
    """

    instruction: str = Field(description="The candidate instruction, as parsed out of the response.")
    reason: str = Field(
        description="Stable snake_case reason: a heuristic rule's (too_short, blacklisted_keyword, "
        "...), too_similar (ROUGE-L filter), or truncated (the last item of a response cut off by the "
        "length limit)."
    )
    request: int = Field(description="Number of the instruction request whose response held it.")
    # Left out of the dump when None, as they are left out of the file.
    most_similar: str | None = Field(
        default=None,
        exclude_if=_absent,
        description="too_similar only: the pool instruction it was too close to.",
    )
    similarity: float | None = Field(
        default=None,
        exclude_if=_absent,
        description="too_similar only: ROUGE-L F-measure against it, rounded to 4 places.",
    )

    @model_validator(mode="after")
    def _similarity_comes_with_most_similar(self) -> Rejected:
        if (self.most_similar is None) != (self.similarity is None):
            raise ValueError("most_similar and similarity are given together or not at all")
        return self


class Classification(_Record):
    """The classification check of one accepted instruction (classification.jsonl)."""

    id: str = Field(description="Task id (MachineInstruction.id).")
    instruction: str = Field(description="The instruction that was checked.")
    is_classification: bool = Field(
        description="The parsed answer; an answer that is neither yes nor no counts as false."
    )
    raw: str = Field(description="The model's answer text as received, for explaining the verdict.")


class InstanceRecord(_Record):
    """The instances generated for one task, before and after the instance rules (instances.jsonl).

    Written before the task's dataset records; a resumed run replays it to write those a crash cut off.
    """

    id: str = Field(description="Task id (MachineInstruction.id).")
    instruction: str = Field(description="The task's instruction.")
    is_classification: bool = Field(
        description="From the classification check: true means the instances were generated output-first."
    )
    instances: list[Instance] = Field(
        description="The instances parsed out of the response, before the instance rules."
    )
    truncated: bool = Field(
        description="The response was cut off by the length limit; its incomplete last instance is "
        "not among `instances`."
    )
    raw: str = Field(description="The model's response text as received.")
    dropped: dict[str, NonNegativeInt] = Field(
        description="Instances dropped, by reason (instance rules, wrong_language, near_duplicate, "
        "truncated); the judge's drops are counted in stats.json."
    )


class JudgementRecord(_Record):
    """The judge's rating of one dataset record (judgements.jsonl); written before the record."""

    id: str = Field(description="The dataset record's id.")
    score: int | None = Field(
        ge=1, le=5, description="1 (irrelevant or invalid) to 5 (valid and satisfying); None: unreadable."
    )
    reason: str | None = Field(description="The judge's one-sentence reason; None when unreadable.")
    raw: str = Field(description="The judge's answer text as received.")


class DatasetRecord(_Record):
    """One instruction-tuning example (dataset.jsonl), in the Alpaca format plus its ids.

    Users may add keys to the file: reading keeps them.
    """

    model_config = ConfigDict(extra="allow")

    instruction: str = Field(description="The task's instruction.")
    input: str = Field(description="The instance's input; empty when the task needs none.")
    output: str = Field(description="The instance's output.")
    id: str = Field(
        description="`<task id>-<n>`, n counting from 0 the task's instances that the instance rules "
        "kept (a near-duplicate dropped after them leaves a gap)."
    )
    is_classification: bool = Field(description="From the task's classification check.")
    score: int | None = Field(
        None,
        ge=1,
        le=5,
        description="The judge's rating, 1-5 (judged runs only; None when its answer was unreadable).",
    )
    score_reason: str | None = Field(None, description="The judge's one-sentence reason (judged runs only).")


class CachedResponse(_Record):
    """One answered request (responses.jsonl), stored the moment it arrived, before any parsing.

    A resumed run replays it instead of sending the request again. Keys it does not know are
    ignored, and a line that is not a valid response is skipped with a warning (that request is
    simply sent again), unlike the other files.
    """

    model_config = ConfigDict(extra="ignore")

    key: str = Field(
        description="Hash of (model, prompt, sampling settings, stop, index): selfinstruct.cache.request_key."
    )
    stage: str = Field(description="The stage that asked: instructions, classification, instances or judge.")
    index: str = Field(
        description="The request's number in the instructions stage (a decimal string), the task id "
        "(classification, instances) or the record id (judge)."
    )
    text: str = Field(description="The generated text.")
    finish_reason: str | None = Field(
        description="As the endpoint reported it: `stop`, or `length` when cut off by max_tokens."
    )
    prompt_tokens: NonNegativeInt = Field(description="Prompt tokens, from the endpoint's usage.")
    completion_tokens: NonNegativeInt = Field(description="Generated tokens, from the endpoint's usage.")
    endpoint: str | None = Field(
        None, description="The base URL that answered; None in files written before it was recorded."
    )

    @field_validator("index")
    @classmethod
    def _instruction_requests_are_numbered(cls, index: str, info: ValidationInfo) -> str:
        if info.data.get("stage") == "instructions" and not index.isdigit():
            raise ValueError(f"an instructions request is numbered (got {index!r})")
        return index


class InstructionCounts(_Record):
    """stats.json `instructions`."""

    target: NonNegativeInt = Field(description="Instructions the run was asked to accept.")
    accepted: NonNegativeInt = Field(
        description="Instructions in machine_instructions.jsonl; above target when an earlier run of "
        "the directory had a higher one."
    )
    candidates: NonNegativeInt = Field(
        description="Instructions put through the filters (truncated last items are not candidates)."
    )
    acceptance_rate: float | None = Field(
        description="accepted / candidates, rounded to 4 places; None before the first candidate."
    )
    rejected: dict[str, NonNegativeInt] = Field(
        description="rejected.jsonl records by reason, most frequent first."
    )


class JudgeCounts(_Record):
    """stats.json `judge`: the judge's ratings of the records."""

    scored: NonNegativeInt = Field(description="Records the judge rated with a readable score.")
    low_score: NonNegativeInt = Field(description="Of those, dropped as under --min-score.")
    unparsed: NonNegativeInt = Field(description="Records whose judge answer gave no score 1-5.")
    histogram: dict[str, NonNegativeInt] = Field(description='Records by score, "1" to "5".')


class InstanceCounts(_Record):
    """stats.json `instances`."""

    tasks: NonNegativeInt = Field(description="Tasks whose instances went through the instance rules.")
    generated: NonNegativeInt = Field(
        description="Instances parsed out of responses, plus one per response cut off mid-instance."
    )
    kept: NonNegativeInt = Field(description="Instances that passed every rule: the dataset records.")
    dropped: dict[str, NonNegativeInt] = Field(
        description="Dropped instances by reason, most frequent first."
    )


class TokenCounts(_Record):
    """stats.json `tokens`: the endpoint's usage over every response in responses.jsonl."""

    prompt: NonNegativeInt = Field(description="Prompt tokens.")
    completion: NonNegativeInt = Field(description="Generated tokens.")


class EndpointCounts(_Record):
    """stats.json `endpoints`: one endpoint's share of the requests, and its failures."""

    requests: NonNegativeInt = Field(
        description="Prompts sent to it, retries included (a completions request may carry several)."
    )
    failures: dict[str, NonNegativeInt] = Field(
        description="Requests that failed, by kind (connection, timeout, http_503, invalid_body, ...)."
    )
    prompt_tokens: NonNegativeInt = Field(description="Prompt tokens of its answers.")
    completion_tokens: NonNegativeInt = Field(description="Generated tokens of its answers.")
    times_down: NonNegativeInt = Field(
        description="Times it was taken out of rotation: a refused or reset connection, server errors "
        "or timeouts in a row, or no answer to the start-up check."
    )


class StageEndpointCounts(_Record):
    """stats.json `requests_by_stage_endpoint`: one stage's answered requests at one endpoint."""

    requests: NonNegativeInt = Field(description="Answered requests (prompts).")
    prompt_tokens: NonNegativeInt = Field(description="Prompt tokens.")
    completion_tokens: NonNegativeInt = Field(description="Generated tokens.")


class Stats(_Record):
    """stats.json: the counts of a run, written by `selfinstruct.stats.RunStats.to_dict`.

    Counts cover every run of the directory (an interrupted run and its resumes), except
    replayed_responses, which counts this run's replays.
    """

    instructions: InstructionCounts = Field(description="Instruction stage.")
    classification: dict[str, NonNegativeInt] = Field(
        description="Classification check answers: yes, no, unparsed (which counts as no)."
    )
    instances: InstanceCounts = Field(description="Instance stage and instance rules.")
    dataset_records: NonNegativeInt = Field(description="Records in dataset.jsonl.")
    requests: dict[str, NonNegativeInt] = Field(description="Answered requests by stage.")
    retries: dict[str, NonNegativeInt] = Field(description="Transient endpoint errors retried, by kind.")
    replayed_responses: NonNegativeInt = Field(
        description="Responses this run took from responses.jsonl instead of requesting them again."
    )
    resumes: NonNegativeInt = Field(description="Times the run directory was resumed.")
    tokens: TokenCounts = Field(description="Token usage.")
    tokens_by_stage: dict[str, TokenCounts] = Field(
        default_factory=dict,
        description="Token usage by stage (instructions, classification, instances); they sum to `tokens`.",
    )
    cost_usd: NonNegativeFloat | None = Field(
        default=None,
        description="What the responses cost at price_input and price_output (USD per million prompt and "
        "completion tokens), rounded to 6 places; None when the run has no prices.",
    )
    wall_seconds: NonNegativeFloat = Field(description="Wall time of all runs of the directory, in seconds.")
    completion_tokens_per_second: NonNegativeFloat = Field(
        description="Generated tokens per second of wall time."
    )
    endpoints: dict[str, EndpointCounts] = Field(
        default_factory=dict,
        description="Counts per endpoint base URL, as given (--base-url or the started server's); "
        "empty in a stats.json written before they were counted.",
    )
    requests_by_stage_endpoint: dict[str, dict[str, StageEndpointCounts]] = Field(
        default_factory=dict,
        description="Answered requests and tokens by stage, then by the base URL that answered "
        '("" for responses recorded before the URL was).',
    )
    judge: JudgeCounts | None = Field(default=None, description="The judge's counts; None when it is off.")


RESPONSES = "responses.jsonl"
STATS = "stats.json"
RUN_FILES: dict[str, type[BaseModel]] = {
    "machine_instructions.jsonl": MachineInstruction,
    "rejected.jsonl": Rejected,
    "classification.jsonl": Classification,
    "instances.jsonl": InstanceRecord,
    "judgements.jsonl": JudgementRecord,
    "dataset.jsonl": DatasetRecord,
    RESPONSES: CachedResponse,
    STATS: Stats,
}


def read_run_file(run_dir: Path, name: str) -> list[BaseModel]:
    """The records of the JSONL file `name` of a run directory, validated by its model, without
    changing the file; a missing file has none.

    A torn last line (a run still writing, or killed) is left out. A line that is not a valid record
    is a UserError naming FILE:LINE and the field, except in responses.jsonl, whose invalid lines
    are skipped with a warning, as a resumed run skips them.
    """
    model = RUN_FILES.get(name)
    if model is None or name == STATS:
        raise ValueError(f"{name!r} is not a JSONL run file: one of {[n for n in RUN_FILES if n != STATS]}")
    path = Path(run_dir) / name
    records = []
    for lineno, raw in scan_jsonl(path):
        if raw is None:
            problem = "not a JSON record"
        else:
            try:
                records.append(model.model_validate(raw))
                continue
            except ValidationError as exc:
                problem = _problem(exc)
        if name != RESPONSES:
            raise UserError(f"{path}:{lineno}: {problem}")
        log.warning("%s:%d: skipping a line that is not a valid response (%s)", path, lineno, problem)
    return records


def read_stats(run_dir: Path) -> Stats | None:
    """A run directory's stats.json, or None when it has none yet; a file that is not valid stats
    is a UserError naming the field."""
    path = Path(run_dir) / STATS
    if not path.exists():
        return None
    text = read_text(path, "not found", "not UTF-8 text — stats.json is written as UTF-8 JSON")
    try:
        return Stats.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    except ValidationError as exc:
        raise UserError(f"{path}: {_problem(exc)}") from None


def _problem(exc: ValidationError) -> str:
    field, message = first_error(exc)
    return f"field '{field}': {message}" if field else message
