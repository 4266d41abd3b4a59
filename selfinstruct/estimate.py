"""`run --dry-run`: the requests, tokens and cost a run would take, per stage, before anything is sent.

Prompt lengths come from real prompts, built from the seeds with the run's own prompt builders and
counted with the model's tokenizer when it is on disk (the embedded model once prepared, or a local
--model folder with a tokenizer.json), else as characters / 4 with each CJK character one token.
What the model will write cannot be built, so it is assumed (the constants below, printed with the
estimate) — unless the output directory already holds a run: then its own averages so far (tokens
per request per stage, accepted instructions per instruction request) estimate the rest of it.
Against tests/fast_endpoint.py, extending a 300-instruction run to 900 that way came within 1% of
the tokens the real extension then spent.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from selfinstruct.config import STAGES, Backend, RunConfig
from selfinstruct.judge import build_judge_prompt
from selfinstruct.prompts import build_classification_prompt, build_instance_prompt, build_instruction_prompt
from selfinstruct.records import read_run_file
from selfinstruct.tasks import SeedTask

# The list the model continues stops at item 16 (prompts.INSTRUCTION_STOP).
LIST_END = 16
ASSUMED_ACCEPTANCE = 0.5  # share of parsed instructions that pass the filters
CLASSIFICATION_ANSWER = 1  # tokens: " Yes" / " No"
INSTANCES_SHARE = 0.5  # of the instances stage's max_tokens
PROMPT_SAMPLES = 64  # instruction prompts built to average their length
RECORDS_PER_TASK = 2.0  # dataset records (judge requests) per task
JUDGE_ANSWER = 30  # tokens: {"score": 4, "reason": "one sentence"}

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")


@dataclass
class StageLoad:
    """Requests of one stage still to send, with the tokens each takes on average."""

    requests: int
    prompt: float  # tokens per request
    completion: float
    measured: int = 0  # requests the averages come from; 0: built prompts and assumptions

    @property
    def prompt_tokens(self) -> int:
        return round(self.requests * self.prompt)

    @property
    def completion_tokens(self) -> int:
        return round(self.requests * self.completion)


@dataclass
class Estimate:
    target: int
    accepted: int  # instructions accepted so far (an existing run directory)
    per_request: float  # accepted instructions per instruction request
    stages: dict[str, StageLoad]  # what is still to send
    counted_with: str
    assumed: list[str]  # what was assumed, in words
    run_dir: Path | None = None
    spent: Counter = field(default_factory=Counter)  # requests, prompt, completion so far
    records_per_task: float | None = None
    short: bool = False  # the request budget (max_requests) ends the instructions stage first

    def tokens(self) -> tuple[int, int]:
        return (sum(s.prompt_tokens for s in self.stages.values()),
                sum(s.completion_tokens for s in self.stages.values()))  # fmt: skip


def token_counter(backend: Backend) -> tuple[Callable[[str], int], str]:
    """A function counting a text's tokens, and its name for the output."""
    folder = None
    if backend.kind == "embedded":
        from selfinstruct.generation.embedded import embedded_model_dir, is_prepared

        folder = embedded_model_dir() if is_prepared() else None
    elif backend.model and Path(backend.model).is_dir():
        folder = Path(backend.model)
    if folder is not None and (folder / "tokenizer.json").is_file():
        try:
            from tokenizers import Tokenizer
        except ImportError:
            pass
        else:
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            return (lambda text: len(tokenizer.encode(text).ids)), f"the tokenizer of {folder.name}"
    return _approximate_tokens, "≈ characters / 4 (CJK characters 1 each)"


def _approximate_tokens(text: str) -> int:
    cjk = len(_CJK.findall(text))
    return cjk + math.ceil((len(text) - cjk) / 4)


def _mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def assumed_loads(config: RunConfig, seeds: list[SeedTask], count: Callable[[str], int]) -> dict:
    """Per request of each stage (prompt tokens, completion tokens), and the instructions a request
    yields, from prompts built from the seeds and the ASSUMED values."""
    texts = [s.instruction for s in seeds]
    rng = random.Random(0)
    lang = config.language
    prompts = {
        "instructions": [
            build_instruction_prompt(rng.sample(texts, min(config.num_demos, len(texts))), lang)
            for _ in range(PROMPT_SAMPLES)
        ],
        "classification": [build_classification_prompt(t, lang) for t in texts],
        "instances": [build_instance_prompt(s.instruction, s.is_classification, lang) for s in seeds],
        "judge": [
            build_judge_prompt(s.instruction, i.input, i.output, lang) for s in seeds for i in s.instances
        ],
    }
    items = max(1, LIST_END - 1 - config.num_demos)
    per_item = _mean([count(t) for t in texts]) + 2  # "N. " before each
    completions = assumed_completions(config)
    completions["instructions"] = min(items * per_item, config.instructions.max_tokens)
    loads = {stage: (_mean([count(p) for p in prompts[stage]]), completions[stage]) for stage in STAGES}
    return loads | {"items": items, "per_item": per_item}


def assumed_completions(config: RunConfig) -> dict[str, float]:
    """Completion tokens assumed per classification, instances and judge request."""
    return {
        "classification": min(CLASSIFICATION_ANSWER, config.classification.max_tokens),
        "instances": config.instances.max_tokens * INSTANCES_SHARE,
        "judge": min(JUDGE_ANSWER, config.judge.max_tokens),
    }


def run_stages(config: RunConfig) -> tuple[str, ...]:
    """The stages a run sends requests for: the judge only when it is on."""
    return tuple(s for s in STAGES if s != "judge" or config.judge.enabled)


@dataclass
class Measured:
    """What a run directory holds so far."""

    per_stage: dict[str, tuple[int, float, float]]  # requests, mean prompt and completion tokens
    spent: Counter  # requests, prompt, completion
    accepted: int
    decided: int  # instruction requests whose instructions went through the filters
    done: Counter  # tasks below the target that were classified / annotated
    records_per_task: float | None


def measure(run_dir: Path, target: int) -> Measured:
    by_stage: dict[str, list] = {}
    spent: Counter = Counter()
    for r in read_run_file(run_dir, "responses.jsonl"):
        by_stage.setdefault(r.stage, []).append(r)
        spent.update(requests=1, prompt=r.prompt_tokens, completion=r.completion_tokens)
    per_stage = {
        stage: (len(rs), _mean([r.prompt_tokens for r in rs]), _mean([r.completion_tokens for r in rs]))
        for stage, rs in by_stage.items()
    }
    accepted = read_run_file(run_dir, "machine_instructions.jsonl")
    decided = {r.request for r in accepted} | {r.request for r in read_run_file(run_dir, "rejected.jsonl")}
    done = Counter()
    for stage in ("classification", "instances"):
        done[stage] = sum(
            int(r.id.rsplit("_", 1)[-1]) < target for r in read_run_file(run_dir, f"{stage}.jsonl")
        )
    records = len(read_run_file(run_dir, "dataset.jsonl"))
    per_task = records / done["instances"] if done["instances"] else None
    return Measured(per_stage, spent, len(accepted), len(decided), done, per_task)


def estimate(config: RunConfig, seeds: list[SeedTask], run_dir: Path | None) -> Estimate:
    """What the run still needs; from its own averages when run_dir holds a run with responses."""
    count, counted_with = token_counter(config.backend)
    base = assumed_loads(config, seeds, count)
    target = config.num_instructions
    m = Measured({}, Counter(), 0, 0, Counter(), None)
    if run_dir is not None and (run_dir / "config.json").is_file():
        m = measure(run_dir, target)
    assumed = []
    if m.decided and m.accepted:
        per_request = m.accepted / m.decided
    else:
        per_request = base["items"] * ASSUMED_ACCEPTANCE
        assumed.append(
            f"{base['items']} instructions per request (the list stops at item {LIST_END}), "
            f"{ASSUMED_ACCEPTANCE:.0%} of them accepted"
        )
    # Responses received but not yet filtered (in flight when an earlier run reached its target)
    # are replayed before anything is sent.
    waiting = m.per_stage.get("instructions", (0,))[0] - m.decided
    to_go = max(0, target - m.accepted)
    needed = max(0, math.ceil(to_go / per_request) - waiting) if to_go else 0
    left = max(0, config.request_budget - m.per_stage.get("instructions", (0,))[0])
    if needed:  # when the target is reached, the other requests in flight finish too (paid for)
        needed += config.concurrency - 1
    short = needed - config.concurrency + 1 > left
    tasks = min(target, m.accepted + int((left + waiting) * per_request)) if short else target
    judged = m.per_stage.get("judge", (0,))[0]
    if judged and m.done["instances"]:
        per_task = judged / m.done["instances"]
    else:
        per_task = RECORDS_PER_TASK
        if config.judge.enabled:
            assumed.append(f"{RECORDS_PER_TASK:g} records to judge per task")
    requests = {
        "instructions": min(needed, left),
        "classification": max(0, tasks - m.done["classification"]),
        "instances": max(0, tasks - m.done["instances"]),
        "judge": max(0, round(tasks * per_task) - judged),
    }
    why = {
        "instructions": f"{base['items']} × the seeds' mean instruction + 2",
        "classification": "a one-word answer",
        "instances": f"{INSTANCES_SHARE:.0%} of max_tokens",
        "judge": "a score and one sentence",
    }
    stages, completions = {}, []
    for stage in run_stages(config):
        if stage in m.per_stage:
            n, prompt, completion = m.per_stage[stage]
            stages[stage] = StageLoad(requests[stage], prompt, completion, measured=n)
        else:
            prompt, completion = base[stage]
            stages[stage] = StageLoad(requests[stage], prompt, completion)
            completions.append(f"{stage} {completion:.0f} ({why[stage]})")
    if completions:
        assumed.append("completion tokens per request: " + ", ".join(completions))
    return Estimate(target, m.accepted, per_request, stages, counted_with, assumed,
                    run_dir if m.spent else None, m.spent, m.records_per_task,
                    short=short)  # fmt: skip


def cost(prices: tuple[float, float] | None, prompt: float, completion: float) -> float | None:
    return None if prices is None else (prompt * prices[0] + completion * prices[1]) / 1e6


def format_estimate(est: Estimate, config: RunConfig) -> str:
    prices = config.prices
    rest = "the rest of " if est.run_dir else ""
    where = f" in {est.run_dir} ({est.accepted:,} accepted so far)" if est.run_dir else ""
    lines = [f"dry run: estimate for {rest}{est.target:,} instructions{where} — nothing sent or written"]
    head = ["stage", "requests", "prompt tokens", "completion tokens"] + (["cost USD"] if prices else [])
    rows = []
    for name, s in est.stages.items():
        rows.append([name, s.requests, s.prompt_tokens, s.completion_tokens])
    prompt, completion = est.tokens()
    rows.append(["total", sum(s.requests for s in est.stages.values()), prompt, completion])
    cells = [head] + [
        [r[0]] + [f"{v:,}" for v in r[1:]] + ([f"{cost(prices, r[2], r[3]):.4f}"] if prices else [])
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    for row in cells:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(padded))
    if est.run_dir:
        n = est.spent["requests"]
        per_stage = ", ".join(
            f"{name} {s.prompt:.0f} + {s.completion:.0f}" for name, s in est.stages.items() if s.measured
        )
        lines.append(
            f"measured from {n:,} requests in {est.run_dir}: {est.per_request:.2f} accepted per instruction "
            f"request; tokens per request (prompt + completion): {per_stage}"
            + (f"; {est.records_per_task:.2f} dataset records per task" if est.records_per_task else "")
        )
        spent_cost = cost(prices, est.spent["prompt"], est.spent["completion"])
        total = est.spent["prompt"] + est.spent["completion"] + prompt + completion
        lines.append(
            f"spent so far: {n:,} requests, {est.spent['prompt'] + est.spent['completion']:,} tokens"
            + (f" (${spent_cost:.4f})" if prices else "")
            + f"; whole run ≈ {total:,} tokens"
            + (f" (${spent_cost + cost(prices, prompt, completion):.4f})" if prices else "")
        )
    if est.assumed:
        lines.append("assumed: " + "; ".join(est.assumed))
    if not all(s.measured for s in est.stages.values()):
        which = "the stages not measured: " if est.run_dir else ""
        lines.append(f"prompt tokens ({which}prompts built from the seeds) counted with {est.counted_with}")
    lines += _budget_notes(est, config, (prompt, completion))
    return "\n".join(lines)


def _budget_notes(est: Estimate, config: RunConfig, tokens: tuple[int, int]) -> list[str]:
    """How far the budgets take the run, measured against the whole run (what was spent + the rest)."""
    prompt, completion = est.spent["prompt"] + tokens[0], est.spent["completion"] + tokens[1]
    budgets = [("--token-budget", config.token_budget, prompt + completion, ",")]
    if config.prices is not None:
        budgets.append(("--cost-budget", config.cost_budget, cost(config.prices, prompt, completion), "g"))
    notes = [
        f"{flag} {budget:{spec}}: "
        + ("covers this estimate" if budget >= need else f"stops the run at about {budget / need:.0%} of it")
        for flag, budget, need, spec in budgets
        if budget is not None
    ]
    if est.short:
        notes.append(
            f"the request budget ({config.request_budget:,}, --max-requests) ends the instructions stage "
            "before the target"
        )
    return notes
