"""The checks of a task's records, beside the event loop: instance rules, the language rule and
near-duplicates (Self-Instruct §2.3, and ours).

They are CPU work with state (the near-duplicate index grows with the dataset): in a large run they
were a third or more of the coordinator's CPU, all of it on the event loop, between requests. A
`RecordChecks` sends them to one worker process in batches, so that the loop (requests, parsing,
files) has one core and the checks another; a small run, where starting a process costs more than
it saves, checks in its own process. Either way the tasks are checked in the order they were
submitted and their results are handed back in that order, so a replay of instances.jsonl after a
crash rebuilds the same near-duplicate index and the same records.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from selfinstruct.tasks import Instance

# A run of at least this many instructions checks its records in a worker process.
WORKER_FROM = 500

# What a task comes back as: the (key, input, output) of the records it keeps, and its drops by reason.
Checked = tuple[list[tuple[str, str, str]], dict[str, int]]


@dataclass(frozen=True)
class CheckSettings:
    max_instances: int
    language: str | None  # None: the language rule is off
    near_duplicate_threshold: float


class Checks:
    """The checks themselves, with their state; where they run is RecordChecks' business."""

    def __init__(self, settings: CheckSettings):
        # Imported here: a run whose checks are in a worker does not load datasketch (and scipy,
        # half a second) in its own process.
        from selfinstruct.filters.instances import NearDuplicateRecords, apply_instance_rules
        from selfinstruct.filters.language import LanguageCheck

        self.apply_instance_rules = apply_instance_rules
        self.max_instances = settings.max_instances
        self.language = LanguageCheck(settings.language) if settings.language else None
        self.near_duplicates = NearDuplicateRecords(settings.near_duplicate_threshold)

    def check(self, task: tuple[str, str, list[dict], bool]) -> Checked:
        """One task (id, instruction, instances, truncated): the instance rules, then the language
        rule and near-duplicates record by record, in order."""
        task_id, instruction, instances, truncated = task
        kept, drops = self.apply_instance_rules([Instance(**i) for i in instances], self.max_instances)
        if truncated:
            drops["truncated"] += 1
        unique = []
        for n, inst in enumerate(kept):
            key = f"{task_id}-{n}"
            if self.language and self.language.record_reason(instruction, inst.output, inst.input):
                drops["wrong_language"] += 1
            elif self.near_duplicates.is_duplicate(key, task_id, instruction, inst.input):
                drops["near_duplicate"] += 1
            else:
                unique.append((key, inst.input, inst.output))
        return unique, dict(drops)


# The worker process's Checks, made once by its initializer.
_checks: Checks | None = None


def _start_worker(settings: CheckSettings) -> None:
    global _checks
    # Ctrl-C (or a SIGTERM to the process group) reaches the worker too; the run decides what to
    # stop and shuts the worker down, or the worker leaves when the run is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A run killed outright (SIGKILL, out of memory) cannot stop its worker: it leaves by itself.
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    _checks = Checks(settings)


def _exit_with_parent() -> None:
    multiprocessing.connection.wait([multiprocessing.parent_process().sentinel])
    os._exit(0)


def _check_batch(tasks: list) -> list[Checked]:
    return [_checks.check(t) for t in tasks]


class RecordChecks:
    """Checks tasks in submission order, in a worker process or in this one; `on_checked(record,
    replay, unique, drops)` is called for each, in that order, before the task's future resolves."""

    def __init__(
        self,
        settings: CheckSettings,
        on_checked: Callable[[dict, bool, list[tuple[str, str, str]], dict[str, int]], None],
        worker: bool,
    ):
        self.on_checked = on_checked
        self._inline = None if worker else Checks(settings)
        self._pool = None
        if worker:
            # spawn, not fork: the loop's threads and sockets must not be copied into the worker.
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(settings,),
            )
            self._pool.submit(int)  # start the worker now: it loads its models beside the first stage
        self._waiting: list[tuple[dict, bool, asyncio.Future]] = []  # not sent yet
        self._sent: deque[tuple[list, concurrent.futures.Future]] = deque()  # in the worker, in order
        self._closed = False

    def submit(self, record: dict, replay: bool = False) -> asyncio.Future:
        """Check a stage record (id, instruction, instances, truncated); the future resolves to the
        records kept, as (key, input, output), once on_checked has seen them."""
        future = asyncio.get_running_loop().create_future()
        if not self._waiting:
            # Tasks answered in one turn of the loop (one batched response) go as one batch.
            asyncio.get_running_loop().call_soon(self._send)
        self._waiting.append((record, replay, future))
        return future

    def _send(self) -> None:
        batch, self._waiting = self._waiting, []
        if self._closed or not batch:
            return
        tasks = [(r["id"], r["instruction"], r["instances"], r["truncated"]) for r, _, _ in batch]
        if self._inline is None:
            try:
                done = self._pool.submit(_check_batch, tasks)
            except concurrent.futures.process.BrokenProcessPool as e:
                self._fail(batch, _worker_stopped(e))
                return
            self._sent.append((batch, done))
            loop = asyncio.get_running_loop()
            done.add_done_callback(lambda _: loop.call_soon_threadsafe(self._drain))
            return
        try:
            results = [self._inline.check(t) for t in tasks]
        except Exception as e:  # a bug in a check: each task reports it
            self._fail(batch, e)
        else:
            self._deliver(batch, results)

    def _drain(self) -> None:
        """Hand back the batches the worker finished, oldest first, stopping at one still in it."""
        while self._sent and self._sent[0][1].done() and not self._closed:
            batch, done = self._sent.popleft()
            try:
                results = done.result()
            except concurrent.futures.process.BrokenProcessPool as e:
                self._fail(batch, _worker_stopped(e))
            except Exception as e:  # a bug in a check: each task reports it
                self._fail(batch, e)
            else:
                self._deliver(batch, results)

    def _fail(self, batch: list, error: Exception) -> None:
        for _, _, future in batch:
            if not future.done():  # a task cancelled while it waited has its answer
                future.set_exception(error)

    def _deliver(self, batch: list, results: list[Checked]) -> None:
        for (record, replay, future), (unique, drops) in zip(batch, results, strict=True):
            self.on_checked(record, replay, unique, drops)
            if not future.done():
                future.set_result(unique)

    def close(self) -> None:
        """Stop checking; tasks not handed back yet are not (an interrupted run checks them again on
        resume, from the response cache)."""
        self._closed = True
        for _, _, future in self._waiting:
            future.cancel()
        for batch, _ in self._sent:
            for _, _, future in batch:
                future.cancel()
        self._waiting, self._sent = [], deque()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _worker_stopped(error: Exception) -> RuntimeError:
    return RuntimeError(
        f"the worker process that checks records stopped ({error}); the same command resumes the run"
    )
