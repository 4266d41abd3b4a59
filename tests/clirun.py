"""Run `python -m selfinstruct` as a user would, for the tests of its commands."""

import os
import subprocess
import sys

SECRET = "sk-test-should-never-be-written-9f8e7d"  # set as OPENAI_API_KEY, never to be written
# Accepted instructions of the shared embedded run (conftest.embedded_run). The 135M model often
# copies the input as the output, which the instance rules drop: 16 tasks make an empty
# dataset.jsonl (nothing for `datasets` to load) vanishingly unlikely.
EMBEDDED_TARGET = 16


def selfinstruct(*args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "selfinstruct", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
