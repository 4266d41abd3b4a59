"""Progress display: done/target per stage, rejects by reason, requests in flight, tokens/s."""

from __future__ import annotations

import sys
from contextlib import contextmanager

from tqdm import tqdm

from selfinstruct.stats import RunStats


class Progress:
    def __init__(self, stats: RunStats, enabled: bool = True):
        self.stats = stats
        self.enabled = enabled
        self.bar: tqdm | None = None

    @contextmanager
    def stage(self, name: str, total: int):
        interactive = sys.stderr.isatty()
        self.bar = tqdm(
            total=total,
            desc=name,
            unit="task",
            disable=not self.enabled,
            mininterval=0.5 if interactive else 15,
            dynamic_ncols=True,
        )
        try:
            yield self.bar
        finally:
            self.refresh()
            self.bar.close()
            self.bar = None

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)
            self.refresh()

    def refresh(self) -> None:
        if self.bar is None or self.bar.disable:
            return
        s = self.stats
        rejects = ", ".join(f"{k} {v}" for k, v in s.rejected.most_common(4))
        self.bar.set_postfix_str(
            f"rejected: {rejects or 'none'} | in flight {s.in_flight} | {s.tokens_per_second:.0f} tok/s",
            refresh=False,
        )
