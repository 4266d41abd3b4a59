"""Run-directory safety: one run per directory, clean stops on signals at any moment, full disks.

The CLI runs as a subprocess, against the instant endpoint of tests/fast_endpoint.py (many runs,
signals at every stage) and against the real vLLM CPU server (twin runs; signals while the run
starts, uses and stops a server of its own).
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from fast_endpoint import FastEndpoint
from test_faults import FILES, check_run_dir, complete_lines

EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


def command(base_url: str, out: Path, n: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "selfinstruct", "run", "--backend", "openai", "--base-url", base_url,
        "-n", str(n), "-o", str(out), "--seed", "3", "--concurrency", "4", "--no-progress", *extra,
    ]  # fmt: skip


def start(cmd: list[str], log: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "w"), text=True, **kwargs)


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return predicate()
        time.sleep(0.02)
    return False


def handles_signals(proc: subprocess.Popen) -> bool:
    """The process has installed its SIGTERM handler (before that, no program can stop cleanly)."""
    try:
        status = Path(f"/proc/{proc.pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt:")), 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def lines_of(out: Path) -> dict[str, set[str]]:
    return {name: set(complete_lines(out / f"{name}.jsonl")) for name in FILES}


@pytest.fixture(scope="module")
def fast():
    with FastEndpoint(latency=0.03, seed=1) as endpoint:
        yield endpoint


def test_a_second_run_on_a_directory_in_use_is_refused(fast, tmp_path: Path):
    out = tmp_path / "run"
    first = start(command(fast.url, out, 600), tmp_path / "first.log")
    assert wait_for(lambda: len(complete_lines(out / "responses.jsonl")) >= 2, 60, first)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    second = subprocess.run(command(fast.url, out, 600), capture_output=True, text=True, timeout=60)
    assert second.returncode == 2
    assert second.stderr.strip() == (
        f"error: {out}: in use by process {first.pid} (selfinstruct run) — wait for it to end or stop it; "
        "nothing was changed"
    )
    assert set(before) <= {p.name for p in out.iterdir()}
    assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()[-2000:]
    records = check_run_dir(out)  # no duplicate id, instruction, record or response
    assert len(records["machine_instructions"]) == 600
    # Once the first run has ended, its lock is gone: the same command finds the run complete.
    again = subprocess.run(command(fast.url, out, 600), capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "Traceback" not in again.stderr


@pytest.mark.slow
def test_twin_runs_against_the_real_server(vllm_server, tmp_path: Path):
    out = tmp_path / "run"
    cmd = command(vllm_server.base_url, out, 6, "--max-tokens", "96")
    first = start(cmd, tmp_path / "first.log")
    time.sleep(0.5)  # a second terminal, a scheduler's requeue
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr
    assert f"in use by process {first.pid}" in second.stderr and "Traceback" not in second.stderr
    assert first.wait(timeout=900) == 0, (tmp_path / "first.log").read_text()[-2000:]
    records = check_run_dir(out)
    assert len(records["machine_instructions"]) == 6
    print("\ntwin runs (real server): second refused with exit 2, first accepted 6, duplicates: 0")


def test_signals_at_random_moments_stop_cleanly_and_resume_exactly(tmp_path: Path):
    """SIGINT, SIGTERM and SIGHUP at random moments of runs (start-up, bootstrap, annotation, the
    end): one line and 128 + signal every time, never a traceback, nothing written before a signal
    lost, nothing written twice; the same command then finishes at exactly the target."""
    target, rng = 40, random.Random(7)
    moments: Counter[str] = Counter()
    signals = tracebacks = 0
    with FastEndpoint(latency=0.05, seed=2, items=3) as fast:
        for directory in range(6):
            out = tmp_path / f"run{directory}"
            seen = lines_of(out)
            for stage in ("start-up", "bootstrap", "annotation", "anytime"):
                log = tmp_path / f"run{directory}-{stage}.log"
                proc = start(command(fast.url, out, target), log)
                wait_for(lambda: handles_signals(proc), 30, proc)  # noqa: B023
                if stage == "bootstrap":
                    goal = len(complete_lines(out / "responses.jsonl")) + rng.randint(1, 4)
                    wait_for(lambda: len(complete_lines(out / "responses.jsonl")) >= goal, 30, proc)  # noqa: B023
                elif stage == "annotation":
                    goal = len(complete_lines(out / "instances.jsonl")) + rng.randint(0, 10)
                    wait_for(lambda: len(complete_lines(out / "instances.jsonl")) >= goal, 30, proc)  # noqa: B023
                else:
                    time.sleep(rng.uniform(0.0, 1.0 if stage == "start-up" else 4.0))
                sig = rng.choice(list(EXIT))
                what = _moment(out, target)
                proc.send_signal(sig)
                signals += 1
                code = proc.wait(timeout=60)
                stderr = log.read_text()
                tracebacks += "Traceback" in stderr
                assert "Traceback" not in stderr, stderr[-3000:]
                if code == 0:  # the run had finished before the signal landed
                    moments["after the end"] += 1
                else:
                    assert code == EXIT[sig], (stage, what, stderr[-2000:])
                    last = stderr.strip().splitlines()[-1]
                    assert last == f"interrupted ({sig.name}): records written so far are kept"
                    moments[what] += 1
                check_run_dir(out)
                now = lines_of(out)
                for name in FILES:
                    assert seen[name] <= now[name], f"records lost from {name}"
                seen = now
            final = subprocess.run(
                command(fast.url, out, target), capture_output=True, text=True, timeout=120
            )
            assert final.returncode == 0, final.stderr[-2000:]
            records = check_run_dir(out)
            assert len(records["machine_instructions"]) == target
            assert {r["id"] for r in records["instances"]} == {
                r["id"] for r in records["machine_instructions"]
            }
            stats = json.loads((out / "stats.json").read_text())
            assert stats["instructions"]["accepted"] == target
            assert stats["dataset_records"] == len(records["dataset"])
    assert signals - moments["after the end"] >= 20  # signals that hit a running job
    assert moments["bootstrap"] and moments["annotation"]
    print(f"\nsignal test (fast endpoint): {signals} signals, landed {dict(moments)}, tracebacks: "
          f"{tracebacks}, duplicates: 0, 6 runs resumed to exactly {target}")  # fmt: skip


def _moment(out: Path, target: int) -> str:
    if not (out / "config.json").exists():
        return "start-up"
    # Tasks are annotated as they are accepted: annotation has begun once a task's records are in.
    if len(complete_lines(out / "machine_instructions.jsonl")) < target and not complete_lines(
        out / "instances.jsonl"
    ):
        return "bootstrap"
    return "annotation"


def test_a_second_signal_while_stopping_ends_at_once(fast, tmp_path: Path):
    out = tmp_path / "run"
    proc = start(command(fast.url, out, 400), tmp_path / "run.log")
    assert wait_for(lambda: len(complete_lines(out / "responses.jsonl")) >= 3, 60, proc)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    stderr = (tmp_path / "run.log").read_text()
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("interrupted")
    check_run_dir(out)


def _fsize_limit(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_mid_run_is_one_line_and_the_run_resumes(fast, tmp_path: Path):
    """A file-size limit stands in for a full disk: writes past it fail with EFBIG, as they fail
    with ENOSPC on a full file system, through the same code."""
    out, target = tmp_path / "run", 60
    result = subprocess.run(
        command(fast.url, out, target), capture_output=True, text=True, timeout=120,
        preexec_fn=_fsize_limit(20_000),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {out}/") and "cannot write (File too large)" in last
    assert "run the same command again" in last
    before = lines_of(out)
    assert sum(map(len, before.values())) > 0
    json.loads((out / "config.json").read_text())  # never half-written
    if (out / "stats.json").exists():
        json.loads((out / "stats.json").read_text())
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    final = subprocess.run(command(fast.url, out, target), capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr[-2000:]
    records = check_run_dir(out)
    assert len(records["machine_instructions"]) == target
    for name in FILES:
        assert before[name] <= lines_of(out)[name]


def test_a_full_disk_at_start_leaves_a_directory_that_resumes(fast, tmp_path: Path):
    out = tmp_path / "run"
    out.mkdir()
    result = subprocess.run(
        command(fast.url, out, 5), capture_output=True, text=True, timeout=60, preexec_fn=_fsize_limit(100)
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {out / 'config.json'}: cannot write")
    assert {p.name for p in out.iterdir()} <= {".selfinstruct.lock"}
    final = subprocess.run(command(fast.url, out, 5), capture_output=True, text=True, timeout=60)
    assert final.returncode == 0, final.stderr[-2000:]


# Signals while a run starts, uses and stops a vLLM server of its own ---------------------------------


def _server_group(log: Path) -> int | None:
    """The process group of the server the run started (its port is in the run's log)."""
    text = log.read_text()
    if "on port " not in text:
        return None
    port = text.split("on port ", 1)[1].split()[0]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"--port" in cmdline and cmdline[cmdline.index(b"--port") + 1] == port.encode():
                return os.getpgid(int(pid))
        except (OSError, ValueError, IndexError):
            continue
    return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _embedded(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "selfinstruct", "run", "-n", "3", "-o", str(out), "--seed", "3",
        "--max-tokens", "64", "--concurrency", "4", "--no-progress", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_signals_while_the_run_starts_uses_and_stops_its_server(tmp_path: Path):
    """The embedded backend: SIGTERM during server start-up, SIGINT mid-run, SIGTERM while the server
    is being stopped, and two signals in a row; each time one line, 128 + signal, no traceback, and
    no process of the server left; the same command then resumes to exactly the target."""
    out = tmp_path / "run"
    report = []
    cases = [
        ("start-up", signal.SIGTERM, lambda log: "starting vLLM" in log.read_text(), 143),
        ("mid-run", signal.SIGINT, lambda log: len(complete_lines(out / "responses.jsonl")) >= 2, 130),
        ("shutdown", signal.SIGTERM, lambda log: "stopping vLLM server" in log.read_text(), 143),
    ]
    for n, (moment, sig, ready, code) in enumerate(cases):
        log = tmp_path / f"{moment}.log"
        proc = start(_embedded(out), log)
        assert wait_for(lambda: ready(log), 900, proc), log.read_text()[-2000:]  # noqa: B023
        if moment == "start-up":
            time.sleep(random.Random(n).uniform(2, 10))
        group = _server_group(log)
        proc.send_signal(sig)
        returncode = proc.wait(timeout=120)
        stderr = log.read_text()
        assert "Traceback" not in stderr, stderr[-3000:]
        assert returncode == code, stderr[-2000:]
        assert stderr.strip().splitlines()[-1] == f"interrupted ({sig.name}): records written so far are kept"
        assert group is not None and not _group_alive(group), f"server left running after {moment}"
        check_run_dir(out)
        report.append(f"{moment} {sig.name} -> {returncode}")
    records = check_run_dir(out)  # the shutdown case had finished the run before it stopped the server
    assert len(records["machine_instructions"]) == 3

    log = tmp_path / "twice.log"
    proc = start(_embedded(tmp_path / "other"), log)
    assert wait_for(lambda: "starting vLLM" in log.read_text(), 300, proc)
    time.sleep(3)
    group = _server_group(log)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert "Traceback" not in log.read_text()
    assert group is not None and wait_for(lambda: not _group_alive(group), 10)
    report.append("start-up SIGTERM twice -> 143")
    print(f"\nsignal test (embedded server): {'; '.join(report)}; tracebacks: 0, servers left: 0")


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 96 KiB tmpfs (needs root, as in CI); `resize(size)` frees space as a user would."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")

    def resize(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)

    yield mnt, resize
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_disk_that_fills_up_mid_run_is_one_line_and_resumes_after_space_is_freed(fast, small_disk):
    mnt, resize = small_disk
    out, target = mnt / "run", 120
    full = subprocess.run(command(fast.url, out, target), capture_output=True, text=True, timeout=120)
    assert full.returncode == 2, full.stderr[-2000:]
    assert "Traceback" not in full.stderr
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {out}/") and "cannot write (No space left on device)" in last, last
    before = lines_of(out)
    assert before["responses"] and before["machine_instructions"]  # it filled up mid-run
    json.loads((out / "config.json").read_text())
    resize("16m")
    final = subprocess.run(command(fast.url, out, target), capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr[-2000:]
    records = check_run_dir(out)
    assert len(records["machine_instructions"]) == target
    for name in FILES:
        assert before[name] <= lines_of(out)[name], f"records lost from {name}"
