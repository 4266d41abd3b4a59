"""Progress display: done/target per stage (tqdm's own rate and ETA for the stage), rejects by
reason, requests in flight, tokens and cost so far, tokens/s, and while instructions are generated
an ETA for the whole run.

The pipeline refreshes it per response (thousands a second against a fast endpoint): the text
after the bar is rebuilt at most every REFRESH_SECONDS.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

from tqdm import tqdm

from selfinstruct.stats import RunStats

REFRESH_SECONDS = 0.25


class Progress:
    def __init__(
        self, stats: RunStats, enabled: bool = True, annotation_tokens: dict[str, float] | None = None
    ):
        """annotation_tokens: completion tokens expected per request of the classification and
        instances stages, until the run has measured its own (for the whole run's ETA)."""
        self.stats = stats
        self.enabled = enabled
        self.annotation_tokens = annotation_tokens or {}
        self.bar: tqdm | None = None
        self.shown: str | None = None  # the stage whose bar is shown
        self._shown = 0.0

    @contextmanager
    def stage(self, name: str, total: int, unit: str = "task", initial: int = 0):
        """A bar for the stage; `initial`: done before it opened (not counted in its rate)."""
        interactive = sys.stderr.isatty()
        self.shown = name
        self.bar = tqdm(
            total=total,
            initial=initial,
            desc=name,
            unit=unit,
            disable=not self.enabled,
            mininterval=0.5 if interactive else 15,
            dynamic_ncols=True,
        )
        try:
            yield self.bar
        finally:
            self.refresh(force=True)
            self.bar.close()
            self.bar = self.shown = None

    def advance(self, stage: str, n: int = 1) -> None:
        """n more done in `stage` (nothing shown while another stage's bar is)."""
        if self.bar is not None and self.shown == stage:
            self.bar.update(n)
            self.refresh()

    def refresh(self, force: bool = False) -> None:
        if self.bar is None or self.bar.disable:
            return
        now = time.monotonic()
        if not force and now - self._shown < REFRESH_SECONDS:
            return
        self._shown = now
        s = self.stats
        rejects = ", ".join(f"{k} {v}" for k, v in s.rejected.most_common(4))
        spent = f"{_short(s.prompt_tokens + s.completion_tokens)} tok"
        if s.prices is not None:
            spent += f" ${s.cost_usd:.4g}"
        parts = [f"rejected: {rejects or 'none'}", f"in flight {s.in_flight}", spent,
                 f"{s.tokens_per_second:.0f} tok/s"]  # fmt: skip
        if self.shown == "instructions":
            parts.append(f"annotated {s.tasks_annotated}")
            eta = self.run_eta()
            if eta is not None:
                parts.append(f"whole run ~{tqdm.format_interval(eta)} left")
        self.bar.set_postfix_str(" | ".join(parts), refresh=False)

    def run_eta(self) -> float | None:
        """Seconds left for the whole run, while instructions are generated: the completion tokens
        still to come (instructions still to accept and tasks still to annotate, each at what its
        requests took so far, else as expected) at the run's completion tokens per second. Both
        stages share the requests in flight, so their tokens add up."""
        s, bar = self.stats, self.bar
        if not s.accepted or s.tokens_per_second <= 0:
            return None
        per_accepted = s.stage_completion_tokens["instructions"] / s.accepted
        per_task = 0.0
        for stage in ("classification", "instances"):
            n = s.requests[stage]
            per_task += s.stage_completion_tokens[stage] / n if n else self.annotation_tokens.get(stage, 0.0)
        tasks_left = max(0, s.target - s.tasks_annotated)
        return ((bar.total - bar.n) * per_accepted + tasks_left * per_task) / s.tokens_per_second


def _short(n: float) -> str:
    """12,345 -> 12.3k; 4,560,000 -> 4.56M."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(int(n))
