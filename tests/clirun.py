"""Run `python -m selfinstruct` as a user would, for the tests of its commands."""

import os
import subprocess
import sys


def selfinstruct(*args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "selfinstruct", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
