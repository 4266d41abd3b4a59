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
import heapq
import itertools
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


class Slots:
    """At most `size` requests in flight. `slots[name]` is an async context manager holding one;
    when none is free, waiting requests get one in the order of their names' priority (the first
    name first), then in the order they asked."""

    def __init__(self, size: int, names: list[str]):
        self._free = size
        self._waiting: list[tuple[int, int, asyncio.Future]] = []  # a heap
        self._asked = itertools.count()
        self._by_name = {name: _Slot(self, rank) for rank, name in enumerate(names)}

    def __getitem__(self, name: str) -> _Slot:
        return self._by_name[name]

    async def acquire(self, rank: int) -> None:
        if self._free and not self._waiting:
            self._free -= 1
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (rank, next(self._asked), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # given a slot as it was cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiting:
            future = heapq.heappop(self._waiting)[2]
            if not future.done():  # not cancelled while it waited
                future.set_result(None)
                return
        self._free += 1


class _Slot:
    def __init__(self, slots: Slots, rank: int):
        self.slots, self.rank = slots, rank

    async def __aenter__(self) -> None:
        await self.slots.acquire(self.rank)

    async def __aexit__(self, *exc) -> None:
        self.slots.release()


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
        self._sent: set[int] = set()  # instruction requests that had a slot
        # Requests in flight, all stages together; a waiting request of a later stage goes first, so
        # that a task accepted is annotated and checked soon (the checks' worker is busy early).
        self.slots = Slots(
            config.concurrency, [JUDGE.name, INSTANCES.name, CLASSIFICATION.name, INSTRUCTIONS.name]
        )
        self._annotations: list[asyncio.Future] = []
        self._annotated: set[str] = set()  # tasks an earlier run annotated
        self._failed: asyncio.Future | None = None  # set by an annotation that failed (made by run)
        self._stats_saved = -math.inf

    async def run(self) -> RunStats:
        annotations = self._annotations
        self._failed = asyncio.get_running_loop().create_future()
        try:
            # Tasks are annotated as they are accepted, beside the first stage; their checks keep
            # submission order, with an earlier run's records first, in the order they were written.
            for replay in self._replay_annotations():
                self._start(replay)
            for task in self.accepted[: self.config.num_instructions]:
                if task.id not in self._annotated:
                    self._start(self.annotate(task))
            try:
                tasks = await self.generate_instructions()
            except BudgetSpent as exc:
                self.budget.refused = self.budget.refused or exc
                tasks = self.accepted[: self.config.num_instructions]
            self.save_stats()
            with self.progress.stage("instances", len(tasks), initial=self.stats.tasks_annotated):
                await _all_or_none(annotations)
            await asyncio.gather(*self._surplus, return_exceptions=True)
            self.budget.raise_if_refused()
        except BaseException:
            # Stopped (a signal, an error): keep the counts, unless the disk refuses that too, in
            # which case the first error is the one to report.
            for future in self._surplus + annotations:
                future.cancel()
            await asyncio.gather(*self._surplus, *annotations, return_exceptions=True)
            with contextlib.suppress(UserError):
                self.save_stats()
            raise
        else:
            self.save_stats()
        finally:
            if self._failed.done():
                self._failed.exception()  # reported by the annotation that failed
            self.checks.close()
            self.files.close()
        return self.stats

    def _start(self, annotation) -> None:
        """Run a task's annotation beside the rest; a failure (other than a spent budget, which it
        keeps for the end) stops the first stage too."""
        future = asyncio.ensure_future(self.budget.settle(annotation))
        future.add_done_callback(self._check_annotation)
        self._annotations.append(future)

    def _check_annotation(self, future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is not None and not self._failed.done():
            self._failed.set_exception(future.exception())

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
        done = min(len(self.accepted), cfg.num_instructions)
        with self.progress.stage("instructions", cfg.num_instructions, initial=done):
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
                        request = self._request_instructions(next_request)
                        in_flight[asyncio.ensure_future(request)] = next_request
                        next_request += 1
                    if not in_flight:
                        break  # request budget spent
                    done, _ = await asyncio.wait(
                        [*in_flight, self._failed], return_when=asyncio.FIRST_COMPLETED
                    )
                    if self._failed.done():
                        self._failed.result()  # an annotation failed: the run stops with its error
                    for future in done:
                        self._take_instructions(in_flight.pop(future), future.result())
                # Target reached. The requests already sent are paid for: they finish beside the
                # next stages and go to the response cache (a larger target replays them); those
                # still waiting for a slot are not sent.
                for future, request_id in in_flight.items():
                    if request_id in self._sent:
                        self._surplus.append(future)
                    else:
                        future.cancel()
                in_flight.clear()
            except BudgetSpent:
                await self._take_in_flight(in_flight)
                raise
            finally:
                for future in in_flight:
                    future.cancel()
                await asyncio.gather(*in_flight, return_exceptions=True)
        return self.accepted[: cfg.num_instructions]

    async def _request_instructions(self, request_id: int) -> Completion:
        """One instruction request: its demos are drawn from the pool as it is once a slot is free."""
        cfg = self.config
        async with self.slots[INSTRUCTIONS.name]:
            self._sent.add(request_id)
            rng = random.Random(f"{cfg.seed}-{request_id}") if cfg.seed is not None else random
            demos = sample_demos(
                rng, self.seed_instructions, self.machine, cfg.num_demos, cfg.num_machine_demos
            )
            prompt = INSTRUCTIONS.prompt(demos, lang=self.lang)
            return await self.ask(INSTRUCTIONS, str(request_id), prompt)

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
            self._start(self.annotate(task))
            self.stats.accepted += 1
            self.progress.advance("instructions")
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
    def _replay_annotations(self) -> list:
        """Finish the tasks an earlier run annotated (their judgements or dataset records may be
        missing): the coroutines that do. Their records go to the checks first, in file order."""
        replays = []
        for record in self.files.prior["instances"]:
            replays.append(self._publish(record, self.checks.submit(record, replay=True)))
            self._annotated.add(record["id"])
        self._classified = {r["id"]: r["is_classification"] for r in self.files.prior["classification"]}
        return replays

    async def annotate(self, task: MachineTask) -> None:
        is_clf = self._classified.get(task.id)
        if is_clf is None:
            async with self.slots[CLASSIFICATION.name]:
                prompt = CLASSIFICATION.prompt(task.instruction, lang=self.lang)
                answer = await self.ask(CLASSIFICATION, task.id, prompt)
            verdict = self.read(CLASSIFICATION, prompt, answer, task.instruction)
            is_clf = bool(verdict)
            self.stats.classification["unparsed" if verdict is None else "yes" if verdict else "no"] += 1
            record = Classification(
                id=task.id, instruction=task.instruction, is_classification=is_clf, raw=answer.text
            )
            self.files.classification.write(record.model_dump())

        async with self.slots[INSTANCES.name]:
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
        await self._publish(record, self.checks.submit(record))

    def _checked(self, record: dict, replay: bool, unique: list, drops: dict[str, int]) -> None:
        """A task back from the checks (in the order they were asked for): its stage record is
        written, with its drops, before any of its dataset records. Replaying instances.jsonl after a
        crash recomputes the same records (the rules are deterministic and near-duplicates are
        checked in file order) and writes only those the crash cut off."""
        if not replay:
            self.files.instances.write(InstanceRecord(**record, dropped=drops).model_dump())
        self.stats.instances_generated += len(record["instances"]) + record["truncated"]
        self.stats.instance_drops.update(drops)

    async def _publish(self, record: dict, checked: asyncio.Future) -> None:
        """Once the task's records are checked, judge them when the judge is on, then append those
        kept to dataset.jsonl."""
        unique = [(key, Instance.model_construct(input=i, output=o)) for key, i, o in await checked]
        judge = self.config.judge
        scores: list = [None] * len(unique)
        if judge.enabled:
            scores = await asyncio.gather(
                *(self._judge(key, record["instruction"], inst) for key, inst in unique)
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
        self.progress.advance("instances")

    async def _judge(self, key: str, instruction: str, inst: Instance) -> Judgement | None:
        """The judge's rating of one record (None: its answer could not be read); an earlier run's
        rating when there is one."""
        prior = self._judged.get(key)
        if prior is None:
            async with self.slots[JUDGE.name]:
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
