"""The Self-Instruct bootstrapping loop and the stages after it.

1. Instructions: keep `concurrency` requests in flight; each prompt shows demos sampled from the
   seeds and the machine pool as it is now; survivors of the filters join the pool at once.
2. Classification check and 3. instances (input-first or output-first), per accepted task.
4. Instance rules, then the task's records are appended to dataset.jsonl.
Every stage appends its records to its own JSONL file as they arrive.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from selfinstruct.config import RunConfig, Sampling
from selfinstruct.filters import HeuristicFilter, NoveltyFilter, RougePool, run_filters
from selfinstruct.filters.instances import NearDuplicateRecords, apply_instance_rules
from selfinstruct.filters.tokenizers import TOKENIZERS
from selfinstruct.generation.client import Completion
from selfinstruct.progress import Progress
from selfinstruct.prompts import (
    INSTANCE_STOP,
    INSTRUCTION_STOP,
    build_classification_prompt,
    build_instance_prompt,
    build_instruction_prompt,
    instance_prompt_tail,
    parse_classification,
    parse_instances,
    parse_instructions,
)
from selfinstruct.stats import RunStats
from selfinstruct.tasks import JsonlWriter, SeedTask, write_json_atomic


class LLM(Protocol):
    api: str

    async def complete(
        self, prompt: str, sampling: Sampling, stop: list[str] | None = None
    ) -> Completion: ...


@dataclass
class MachineTask:
    id: str
    instruction: str


class RunFiles:
    """The append-only files of a run directory."""

    names = ("machine_instructions", "rejected", "classification", "instances", "dataset")

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        for name in self.names:
            setattr(self, name, JsonlWriter(self.dir / f"{name}.jsonl"))

    def close(self) -> None:
        for name in self.names:
            getattr(self, name).close()


def sample_demos(
    rng: random.Random, seeds: list[str], machine: list[str], num_demos: int, num_machine: int
) -> list[str]:
    """num_machine from the machine pool (fewer while it is small), the rest from the seeds, shuffled."""
    demos = rng.sample(machine, min(num_machine, len(machine)))
    demos += rng.sample(seeds, min(num_demos - len(demos), len(seeds)))
    rng.shuffle(demos)
    return demos


class Pipeline:
    def __init__(
        self,
        config: RunConfig,
        llm: LLM,
        seeds: list[SeedTask],
        heuristics: HeuristicFilter,
        run_dir: Path,
        progress: bool = True,
    ):
        self.config = config
        self.llm = llm
        self.seed_instructions = [s.instruction for s in seeds]
        config.resolve_auto(self.seed_instructions)
        self.heuristics = heuristics
        self.lang = config.language
        self.files = RunFiles(run_dir)
        self.stats = RunStats(target=config.num_instructions)
        self.progress = Progress(self.stats, enabled=progress)
        self.near_duplicates = NearDuplicateRecords(config.near_duplicate_threshold)

    async def run(self) -> RunStats:
        try:
            tasks = await self.generate_instructions()
            self.save_stats()
            with self.progress.stage("instances", len(tasks)):
                semaphore = asyncio.Semaphore(self.config.concurrency)
                await asyncio.gather(*(self.annotate(t, semaphore) for t in tasks))
        finally:
            self.save_stats()
            self.files.close()
        return self.stats

    def save_stats(self) -> None:
        write_json_atomic(self.files.dir / "stats.json", self.stats.to_dict())

    async def ask(self, stage: str, prompt: str, sampling: Sampling, stop: list[str] | None) -> Completion:
        """One request, counted for the stats and the progress display."""
        self.stats.requests[stage] += 1
        self.stats.in_flight += 1
        try:
            completion = await self.llm.complete(prompt, sampling, stop)
        finally:
            self.stats.in_flight -= 1
        self.stats.prompt_tokens += completion.prompt_tokens
        self.stats.completion_tokens += completion.completion_tokens
        self.progress.refresh()
        return completion

    # Stage 1 -----------------------------------------------------------------------------------
    async def generate_instructions(self) -> list[MachineTask]:
        cfg = self.config
        pool = RougePool(self.seed_instructions, TOKENIZERS[cfg.tokenizer])
        filters = [self.heuristics, NoveltyFilter(pool, cfg.rouge_threshold)]
        machine: list[str] = []
        accepted: list[MachineTask] = []
        in_flight: dict[asyncio.Task, int] = {}
        next_request = 0
        with self.progress.stage("instructions", cfg.num_instructions):
            try:
                while len(accepted) < cfg.num_instructions:
                    while len(in_flight) < cfg.concurrency and next_request < cfg.request_budget:
                        rng = random.Random(f"{cfg.seed}-{next_request}") if cfg.seed is not None else random
                        demos = sample_demos(
                            rng, self.seed_instructions, machine, cfg.num_demos, cfg.num_machine_demos
                        )
                        prompt = build_instruction_prompt(demos, self.lang)
                        request = self.ask("instructions", prompt, cfg.instructions, INSTRUCTION_STOP)
                        in_flight[asyncio.ensure_future(request)] = next_request
                        next_request += 1
                    if not in_flight:
                        break  # request budget spent
                    done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    for future in done:
                        request_id = in_flight.pop(future)
                        parsed = parse_instructions(future.result().text, future.result().truncated)
                        if parsed.truncated:
                            self.reject(parsed.truncated, "truncated", request_id)
                        for text in parsed.instructions:
                            if len(accepted) == cfg.num_instructions:
                                break
                            self.stats.candidates += 1
                            decision = run_filters(filters, text)
                            if not decision.kept:
                                self.reject(
                                    text,
                                    decision.reason,
                                    request_id,
                                    decision.most_similar,
                                    decision.similarity,
                                )
                                continue
                            task = MachineTask(id=f"machine_task_{len(accepted)}", instruction=text)
                            pool.add(text)
                            machine.append(text)
                            accepted.append(task)
                            self.stats.accepted += 1
                            self.files.machine_instructions.write({
                                "id": task.id,
                                "instruction": text,
                                "most_similar": decision.most_similar,
                                "similarity": round(decision.similarity or 0.0, 4),
                                "request": request_id,
                            })  # fmt: skip
                            self.progress.advance()
            finally:
                for future in in_flight:
                    future.cancel()
                await asyncio.gather(*in_flight, return_exceptions=True)
        return accepted

    def reject(self, text, reason, request_id, most_similar=None, similarity=None) -> None:
        self.stats.rejected[reason] += 1
        record = {"instruction": text, "reason": reason, "request": request_id}
        if most_similar is not None:
            record |= {"most_similar": most_similar, "similarity": round(similarity, 4)}
        self.files.rejected.write(record)
        self.progress.refresh()

    # Stages 2-4 --------------------------------------------------------------------------------
    async def annotate(self, task: MachineTask, semaphore: asyncio.Semaphore) -> None:
        cfg = self.config
        async with semaphore:
            prompt = build_classification_prompt(task.instruction, self.lang)
            answer = await self.ask("classification", prompt, cfg.classification, None)
        verdict = parse_classification(answer.text)
        is_clf = bool(verdict)
        self.stats.classification["unparsed" if verdict is None else "yes" if verdict else "no"] += 1
        self.files.classification.write(
            {"id": task.id, "instruction": task.instruction, "is_classification": is_clf, "raw": answer.text}
        )

        async with semaphore:
            prompt = build_instance_prompt(task.instruction, is_clf, self.lang)
            completion = await self.ask("instances", prompt, cfg.instances, INSTANCE_STOP)
        # A completion continues the prompt's open label; a chat answer starts afresh.
        opened = instance_prompt_tail(prompt) if self.llm.api == "completions" else ""
        parsed = parse_instances(opened + completion.text, is_clf, completion.truncated)
        kept, drops = apply_instance_rules(parsed.instances, cfg.max_instances)
        if parsed.truncated:
            drops["truncated"] += 1
        records = [(f"{task.id}-{n}", inst) for n, inst in enumerate(kept)]
        unique = [
            (key, inst)
            for key, inst in records
            if not self.near_duplicates.is_duplicate(key, task.id, task.instruction, inst.input)
        ]
        if len(unique) < len(records):
            drops["near_duplicate"] += len(records) - len(unique)
        self.files.instances.write({
            "id": task.id,
            "instruction": task.instruction,
            "is_classification": is_clf,
            "instances": [i.model_dump() for i in parsed.instances],
            "raw": completion.text,
            "dropped": dict(drops),
        })  # fmt: skip
        for key, inst in unique:
            self.files.dataset.write({
                "instruction": task.instruction,
                "input": inst.input,
                "output": inst.output,
                "id": key,
                "is_classification": is_clf,
            })  # fmt: skip
        self.stats.instances_generated += len(parsed.instances) + (1 if parsed.truncated else 0)
        self.stats.instances_kept += len(unique)
        self.stats.instance_drops.update(drops)
        self.stats.tasks_annotated += 1
        self.progress.advance()
