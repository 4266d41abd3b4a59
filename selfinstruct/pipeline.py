"""The Self-Instruct bootstrapping loop and the stages after it.

1. Instructions: keep `concurrency` requests in flight; each prompt shows demos sampled from the
   seeds and the machine pool as it is now; survivors of the filters join the pool at once.
2. Classification check and 3. instances (input-first or output-first), per accepted task.
4. Instance rules, the language rule and near-duplicates; with the judge on, 5. each record is rated
   and those under the threshold dropped; then the task's records are appended to dataset.jsonl.
Every stage appends its records to its own JSONL file as they arrive. The kinds of request (prompt,
parser, stop, output format) are declared side by side in stages.py; each stage's sampling and model
come from its config section.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from selfinstruct.budget import Budget, BudgetSpent
from selfinstruct.cache import ResponseCache, request_key
from selfinstruct.checks import WORKER_FROM, CheckSettings, RecordChecks
from selfinstruct.config import RunConfig, Sampling
from selfinstruct.errors import UserError
from selfinstruct.estimate import assumed_completions
from selfinstruct.filters import HeuristicFilter, NoveltyFilter, RougeIndex, run_filters
from selfinstruct.filters.tokenizers import TOKENIZERS
from selfinstruct.generation.client import Completion
from selfinstruct.judge import Judgement
from selfinstruct.progress import Progress
from selfinstruct.records import (
    Classification,
    DatasetRecord,
    InstanceRecord,
    JudgementRecord,
    MachineInstruction,
    Rejected,
)
from selfinstruct.stages import CLASSIFICATION, INSTANCES, INSTRUCTIONS, JUDGE, STAGES, Stage
from selfinstruct.stats import RunStats
from selfinstruct.tasks import Instance, JsonlWriter, SeedTask, recover_jsonl, write_json_atomic


class LLM(Protocol):
    api: str

    async def complete(
        self,
        prompt: str,
        sampling: Sampling,
        stop: list[str] | None = None,
        response_format: dict | None = None,
    ) -> Completion: ...


@dataclass
class MachineTask:
    id: str
    instruction: str


class RunFiles:
    """The append-only files of a run directory, with what an earlier, interrupted run left in them."""

    names = ("machine_instructions", "rejected", "classification", "instances", "judgements", "dataset")

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        self.prior: dict[str, list[dict]] = {}
        for name in self.names:
            path = self.dir / f"{name}.jsonl"
            self.prior[name] = recover_jsonl(path)
            setattr(self, name, JsonlWriter(path))
        self.cache = ResponseCache(self.dir / "responses.jsonl")

    def close(self) -> None:
        for name in self.names:
            getattr(self, name).close()
        self.cache.close()


def sample_demos(
    rng: random.Random, seeds: list[str], machine: list[str], num_demos: int, num_machine: int
) -> list[str]:
    """num_machine from the machine pool (fewer while it is small), the rest from the seeds, shuffled."""
    demos = rng.sample(machine, min(num_machine, len(machine)))
    demos += rng.sample(seeds, min(num_demos - len(demos), len(seeds)))
    rng.shuffle(demos)
    return demos


async def _all_or_none(coros: list) -> None:
    """Run the coroutines concurrently; when one fails or the caller is cancelled, cancel the rest
    and wait for them, so no request outlives the stage."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Pipeline:
    """One run. Started on a run directory an interrupted run left behind, it continues that run:
    the pool and every stage's progress are rebuilt from the files, cached responses are replayed
    instead of being requested again, and no record is written twice."""

    def __init__(
        self,
        config: RunConfig,
        llm: LLM | dict[str, LLM],
        seeds: list[SeedTask],
        heuristics: HeuristicFilter,
        run_dir: Path,
        progress: bool = True,
    ):
        self.config = config
        # The model of each stage; one LLM stands for every stage.
        self.llms: dict[str, LLM] = llm if isinstance(llm, dict) else dict.fromkeys(STAGES, llm)
        self.seed_instructions = [s.instruction for s in seeds]
        config.resolve_auto(self.seed_instructions)
        self.heuristics = heuristics
        self.lang = config.language
        self.files = RunFiles(run_dir)
        self.stats = RunStats.resumed(config.num_instructions, self.files.prior, self.files.cache.records,
                                      self.files.dir / "stats.json")  # fmt: skip
        self.stats.prices = config.prices
        self.stats.judging = config.judge.enabled
        self.budget = Budget(self.stats, config.token_budget, config.cost_budget)
        self.progress = Progress(self.stats, enabled=progress, annotation_tokens=assumed_completions(config))
        # Instance rules, language rule, near-duplicates: in a worker process for a large run.
        language = self.lang if config.check_language else None
        settings = CheckSettings(config.max_instances, language, config.near_duplicate_threshold)
        worker = config.check_in_worker and config.num_instructions >= WORKER_FROM
        self.checks = RecordChecks(settings, self._checked, worker=worker)
        self.pool = RougeIndex(config.rouge_threshold, TOKENIZERS[config.tokenizer])
        for text in self.seed_instructions:
            self.pool.add(text)
        self.filters = [heuristics, NoveltyFilter(self.pool)]
        self.accepted: list[MachineTask] = []
        self.machine: list[str] = []
        for r in self.files.prior["machine_instructions"]:
            self._join_pool(MachineTask(r["id"], r["instruction"]))
        # Candidates an earlier run already decided on, by (request, text): replays skip them.
        self._recorded = Counter(
            (r["request"], r["instruction"])
            for name in ("machine_instructions", "rejected")
            for r in self.files.prior[name]
        )
        self._dataset_ids = {r["id"] for r in self.files.prior["dataset"]}
        self._judged = {r["id"]: r for r in self.files.prior["judgements"]}
        self._surplus: list[asyncio.Future] = []  # instruction requests past the target
        self._stats_saved = -math.inf

    async def run(self) -> RunStats:
        try:
            tasks = await self.generate_instructions()
            self.save_stats()
            with self.progress.stage("instances", len(tasks)):
                semaphore = asyncio.Semaphore(self.config.concurrency)
                replays, todo = self._replay_annotations(tasks, semaphore)
                annotations = [self.annotate(t, semaphore) for t in todo]
                await _all_or_none([self.budget.settle(c) for c in replays + annotations])
            await asyncio.gather(*self._surplus, return_exceptions=True)
            self.budget.raise_if_refused()
        except BaseException:
            # Stopped (a signal, an error): keep the counts, unless the disk refuses that too, in
            # which case the first error is the one to report.
            for future in self._surplus:
                future.cancel()
            await asyncio.gather(*self._surplus, return_exceptions=True)
            with contextlib.suppress(UserError):
                self.save_stats()
            raise
        else:
            self.save_stats()
        finally:
            self.checks.close()
            self.files.close()
        return self.stats

    def save_stats(self, at_most_every: float = 0.0) -> None:
        """Write stats.json; with `at_most_every`, skip it when it was written less than that many
        seconds ago (the counts are rebuilt from the run files on resume: nothing depends on it)."""
        now = time.monotonic()
        if now - self._stats_saved < at_most_every:
            return
        write_json_atomic(self.files.dir / "stats.json", self.stats.to_dict())
        self._stats_saved = now

    async def ask(self, stage: Stage, index: str, prompt: str) -> Completion:
        """One request of a stage, to the stage's model with its sampling; answered from the
        response cache when an earlier run already paid for it, else sent unless a budget is spent
        (BudgetSpent)."""
        llm, sampling = self.llms[stage.name], getattr(self.config, stage.name)
        key = request_key(getattr(llm, "model", ""), prompt, sampling, stage.stop, index)
        cached = self.files.cache.get(key)
        if cached is not None:
            self.stats.replayed += 1
            return cached
        self.budget.check()
        self.stats.in_flight += 1
        try:
            completion = await llm.complete(prompt, sampling, stage.stop, stage.response_format)
        finally:
            self.stats.in_flight -= 1
        self.files.cache.put(key, stage.name, index, completion)
        self.stats.count_response(stage.name, completion)
        self.progress.refresh()
        return completion

    def read(self, stage: Stage, prompt: str, completion: Completion, *inputs) -> object:
        """A stage's answer, parsed (a completion is read together with the label it continues)."""
        api = self.llms[stage.name].api
        return stage.read(prompt, completion.text, completion.truncated, api, *inputs)

    # Stage 1 -----------------------------------------------------------------------------------
    async def generate_instructions(self) -> list[MachineTask]:
        cfg = self.config
        in_flight: dict[asyncio.Task, int] = {}
        with self.progress.stage("instructions", cfg.num_instructions) as bar:
            bar.update(min(len(self.accepted), cfg.num_instructions))
            # Responses an interrupted run received but may not have finished filtering.
            answered = [r for r in self.files.cache.records if r["stage"] == "instructions"]
            for r in answered:
                completion = Completion(r["text"], r["finish_reason"])
                if self._take_instructions(int(r["index"]), completion):
                    self.stats.replayed += 1
            next_request = 1 + max((int(r["index"]) for r in answered), default=-1)
            try:
                while len(self.accepted) < cfg.num_instructions:
                    while len(in_flight) < cfg.concurrency and next_request < cfg.request_budget:
                        rng = random.Random(f"{cfg.seed}-{next_request}") if cfg.seed is not None else random
                        demos = sample_demos(
                            rng, self.seed_instructions, self.machine, cfg.num_demos, cfg.num_machine_demos
                        )
                        prompt = INSTRUCTIONS.prompt(demos, lang=self.lang)
                        request = self.ask(INSTRUCTIONS, str(next_request), prompt)
                        in_flight[asyncio.ensure_future(request)] = next_request
                        next_request += 1
                    if not in_flight:
                        break  # request budget spent
                    done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    for future in done:
                        self._take_instructions(in_flight.pop(future), future.result())
                # Target reached. The requests still in flight are paid for: they finish beside the
                # next stages and go to the response cache (a larger target replays them).
                self._surplus = list(in_flight)
                in_flight.clear()
            except BudgetSpent:
                await self._take_in_flight(in_flight)
                raise
            finally:
                for future in in_flight:
                    future.cancel()
                await asyncio.gather(*in_flight, return_exceptions=True)
        return self.accepted[: cfg.num_instructions]

    async def _take_in_flight(self, in_flight: dict[asyncio.Task, int]) -> None:
        """Once a budget is spent, take the responses of the requests already sent (those launched
        after it was spent send nothing)."""
        for future, request_id in list(in_flight.items()):
            with contextlib.suppress(BudgetSpent):
                self._take_instructions(request_id, await future)
            del in_flight[future]

    def _take_instructions(self, request_id: int, completion: Completion) -> int:
        """Parse one response and filter its instructions in order; survivors join the pool.
        Returns how many candidates it decided on (others were decided by an earlier run)."""
        parsed = INSTRUCTIONS.parse(completion.text, completion.truncated, None)
        candidates = parsed.instructions + ([parsed.truncated] if parsed.truncated else [])
        decided = 0
        for n, text in enumerate(candidates):
            if self._recorded[(request_id, text)]:
                self._recorded[(request_id, text)] -= 1
                continue
            decided += 1
            if n == len(parsed.instructions):
                self.reject(text, "truncated", request_id)
                continue
            if len(self.accepted) >= self.config.num_instructions:
                continue
            self.stats.candidates += 1
            decision = run_filters(self.filters, text)
            if not decision.kept:
                self.reject(text, decision.reason, request_id, decision.most_similar, decision.similarity)
                continue
            task = MachineTask(id=f"machine_task_{len(self.accepted)}", instruction=text)
            accepted = MachineInstruction(
                id=task.id,
                instruction=text,
                most_similar=decision.most_similar,
                similarity=round(decision.similarity or 0.0, 4),
                request=request_id,
            )
            self.files.machine_instructions.write(accepted.model_dump())
            self._join_pool(task)
            self.stats.accepted += 1
            self.progress.advance()
        self.save_stats(at_most_every=1.0)
        return decided

    def _join_pool(self, task: MachineTask) -> None:
        self.pool.add(task.instruction)
        self.machine.append(task.instruction)
        self.accepted.append(task)

    def reject(self, text, reason, request_id, most_similar=None, similarity=None) -> None:
        self.stats.rejected[reason] += 1
        record = Rejected(
            instruction=text,
            reason=reason,
            request=request_id,
            most_similar=most_similar,
            similarity=None if most_similar is None else round(similarity, 4),
        )
        self.files.rejected.write(record.model_dump())
        self.progress.refresh()

    # Stages 2-4 --------------------------------------------------------------------------------
    def _replay_annotations(
        self, tasks: list[MachineTask], semaphore: asyncio.Semaphore
    ) -> tuple[list, list[MachineTask]]:
        """Finish the tasks an earlier run annotated (their judgements or dataset records may be
        missing): the coroutines that do, and the tasks still to annotate."""
        replays, done = [], set()
        for record in self.files.prior["instances"]:
            replays.append(self._publish(record, self.checks.submit(record, replay=True), semaphore))
            done.add(record["id"])
        self._classified = {r["id"]: r["is_classification"] for r in self.files.prior["classification"]}
        return replays, [t for t in tasks if t.id not in done]

    async def annotate(self, task: MachineTask, semaphore: asyncio.Semaphore) -> None:
        is_clf = self._classified.get(task.id)
        if is_clf is None:
            async with semaphore:
                prompt = CLASSIFICATION.prompt(task.instruction, lang=self.lang)
                answer = await self.ask(CLASSIFICATION, task.id, prompt)
            verdict = self.read(CLASSIFICATION, prompt, answer, task.instruction)
            is_clf = bool(verdict)
            self.stats.classification["unparsed" if verdict is None else "yes" if verdict else "no"] += 1
            record = Classification(
                id=task.id, instruction=task.instruction, is_classification=is_clf, raw=answer.text
            )
            self.files.classification.write(record.model_dump())

        async with semaphore:
            prompt = INSTANCES.prompt(task.instruction, is_clf, lang=self.lang)
            completion = await self.ask(INSTANCES, task.id, prompt)
        parsed = self.read(INSTANCES, prompt, completion, task.instruction, is_clf)
        record = {
            "id": task.id,
            "instruction": task.instruction,
            "is_classification": is_clf,
            "instances": [i.model_dump() for i in parsed.instances],
            "truncated": parsed.truncated is not None,
            "raw": completion.text,
        }
        await self._publish(record, self.checks.submit(record), semaphore)

    def _checked(self, record: dict, replay: bool, unique: list, drops: dict[str, int]) -> None:
        """A task back from the checks (in the order they were asked for): its stage record is
        written, with its drops, before any of its dataset records. Replaying instances.jsonl after a
        crash recomputes the same records (the rules are deterministic and near-duplicates are
        checked in file order) and writes only those the crash cut off."""
        if not replay:
            self.files.instances.write(InstanceRecord(**record, dropped=drops).model_dump())
        self.stats.instances_generated += len(record["instances"]) + record["truncated"]
        self.stats.instance_drops.update(drops)

    async def _publish(self, record: dict, checked: asyncio.Future, semaphore: asyncio.Semaphore) -> None:
        """Once the task's records are checked, judge them when the judge is on, then append those
        kept to dataset.jsonl."""
        unique = [(key, Instance.model_construct(input=i, output=o)) for key, i, o in await checked]
        judge = self.config.judge
        scores: list = [None] * len(unique)
        if judge.enabled:
            scores = await asyncio.gather(
                *(self._judge(key, record["instruction"], inst, semaphore) for key, inst in unique)
            )
        for (key, inst), judgement in zip(unique, scores, strict=True):
            extra = {}
            if judge.enabled:
                drop = self.stats.count_judgement(judgement, judge.min_score, judge.unparsed)
                if drop:
                    self.stats.instance_drops[drop] += 1
                    continue
                score, reason = (judgement.score, judgement.reason) if judgement else (None, None)
                extra = {"score": score, "score_reason": reason}
            self.stats.instances_kept += 1
            if key in self._dataset_ids:
                continue
            example = DatasetRecord(
                instruction=record["instruction"],
                input=inst.input,
                output=inst.output,
                id=key,
                is_classification=record["is_classification"],
                **extra,
            )
            self.files.dataset.write(example.model_dump())
            self._dataset_ids.add(key)
        self.stats.tasks_annotated += 1
        self.progress.advance()

    async def _judge(
        self, key: str, instruction: str, inst: Instance, semaphore: asyncio.Semaphore
    ) -> Judgement | None:
        """The judge's rating of one record (None: its answer could not be read); an earlier run's
        rating when there is one."""
        prior = self._judged.get(key)
        if prior is None:
            async with semaphore:
                prompt = JUDGE.prompt(instruction, inst.input, inst.output, lang=self.lang)
                completion = await self.ask(JUDGE, key, prompt)
            judgement = self.read(JUDGE, prompt, completion)
            prior = JudgementRecord(
                id=key,
                score=judgement.score if judgement else None,
                reason=judgement.reason if judgement else None,
                raw=completion.text,
            ).model_dump()
            self.files.judgements.write(prior)
            self._judged[key] = prior
        return None if prior["score"] is None else Judgement(prior["score"], prior["reason"] or "")
