"""Token and cost budgets: once one is spent, no new request is sent.

Everything ever paid in a run directory counts (responses.jsonl, resumes included: RunStats rebuilds
its token counts from it). The check comes before a request is sent, so the responses of requests
already in flight still arrive and are saved, and may take the total a little past the budget.
A stopped run resumes exactly when run again with a larger budget (cached responses are replayed
for free, whatever the budget).
"""

from __future__ import annotations

from dataclasses import dataclass

from selfinstruct.stats import RunStats


class BudgetSpent(Exception):
    """Raised instead of sending a request once a budget is spent; the runner ends the run with
    exit code 1 and `budget.message()`."""

    def __init__(self, budget: Budget):
        super().__init__(budget.spent())
        self.budget = budget


@dataclass
class Budget:
    stats: RunStats
    tokens: int | None = None  # prompt + completion tokens
    cost: float | None = None  # USD; needs stats.prices
    refused: BudgetSpent | None = None  # the first refusal, while requests in flight finish

    def spent(self) -> str | None:
        """The budget that is spent ("token" or "cost"), or None while requests may be sent."""
        s = self.stats
        if self.tokens is not None and s.prompt_tokens + s.completion_tokens >= self.tokens:
            return "token"
        if self.cost is not None and s.cost_usd >= self.cost:
            return "cost"
        return None

    def check(self) -> None:
        """Before sending a request: BudgetSpent once a budget is spent."""
        if (self.tokens is not None or self.cost is not None) and self.spent():
            raise BudgetSpent(self)

    async def settle(self, coro) -> None:
        """Await coro, one of several running side by side; a BudgetSpent it raises is kept, not
        raised, so that the others' requests in flight finish and are saved. Raise it afterwards
        with raise_if_refused()."""
        try:
            await coro
        except BudgetSpent as exc:
            self.refused = self.refused or exc

    def raise_if_refused(self) -> None:
        if self.refused is not None:
            raise self.refused

    def message(self) -> str:
        """The line a stopped run ends with: which budget, how much was used, how to continue."""
        s = self.stats
        used = s.prompt_tokens + s.completion_tokens
        requests = sum(s.requests.values())
        detail = f"prompt {s.prompt_tokens:,} + completion {s.completion_tokens:,}, {requests:,} requests"
        if self.spent() == "cost":
            what = f"${s.cost_usd:.4f} of ${self.cost:g} used ({used:,} tokens: {detail})"
            flag = "--cost-budget"
        else:
            what, flag = f"{used:,} of {self.tokens:,} tokens used ({detail})", "--token-budget"
        return (
            f"stopped: the {self.spent()} budget is spent — {what}; everything received is saved; "
            f"run the same command with a larger {flag} to continue"
        )
