"""Several endpoints: least-outstanding dispatch, failover, per-endpoint counts.

The pool's choices are tested on their own with a hand-driven clock; the runs go through the CLI,
as a subprocess, against several instant endpoints (tests/fast_endpoint.py) that the tests stop
and start again while the run goes on.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fast_endpoint import FastEndpoint
from fault_proxy import FaultProxy
from test_faults import check_run_dir, complete_lines

from selfinstruct.config import Sampling
from selfinstruct.generation.client import LLMClient
from selfinstruct.generation.dispatch import EndpointPool

DEAD = "http://127.0.0.1:9/v1"  # nothing listens on the discard port: connection refused


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pool_of(n: int, **kwargs) -> tuple[EndpointPool, Clock]:
    clock = Clock()
    return EndpointPool([f"u{i}" for i in range(n)], [None] * n, clock=clock, **kwargs), clock


def urls(endpoints) -> list[str]:
    return [ep.url for ep in endpoints]


# The pool's choices -----------------------------------------------------------------------------
def test_each_request_goes_to_the_endpoint_with_fewest_in_flight():
    pool, _ = pool_of(3)
    a, b, c = pool.endpoints
    assert urls(pool.acquire() for _ in range(3)) == ["u0", "u1", "u2"]  # ties: the earlier one
    pool.release(b)
    assert pool.acquire() is b  # the only one with none in flight
    pool.release(a), pool.release(c)
    assert pool.acquire() is a  # a and c have none in flight, both were sent one: the earlier
    assert pool.acquire() is c
    assert pool.acquire() is a  # one in flight each; a, b and c were sent 2: the earlier
    assert (a.in_flight, b.in_flight, c.in_flight) == (2, 1, 1)
    assert (a.sent, b.sent, c.sent) == (3, 2, 2)


def test_ties_in_flight_go_to_the_endpoint_sent_fewer_requests():
    pool, _ = pool_of(3)
    a, b, c = pool.endpoints
    a.sent, b.sent, c.sent = 5, 2, 3
    assert pool.acquire() is b
    pool.release(b)
    b.sent = 9
    assert pool.acquire() is c


def test_a_request_that_failed_avoids_its_endpoint_unless_no_other_is_up():
    pool, _ = pool_of(2)
    a, b = pool.endpoints
    b.in_flight = 5
    assert pool.acquire(avoid=a) is b
    pool.release(b)
    pool.failed(b, "connection", probe=False)
    assert pool.acquire(avoid=a) is a  # b is out: a it is, failed or not


def test_a_refused_connection_takes_an_endpoint_out_and_probes_back_off_to_30_s():
    pool, clock = pool_of(2)
    a, b = pool.endpoints
    assert pool.failed(a, "connection", probe=False) is True
    assert a.down and a.times_down == 1 and a.down_until == clock.now + 1.0
    assert urls(pool.acquire() for _ in range(4)) == ["u1"] * 4  # out of rotation meanwhile
    for e in (b,) * 4:
        pool.release(e)
    backoffs = []
    for _ in range(7):
        clock.now = a.down_until  # its backoff is over: the next request is the probe
        probe = pool.acquire()
        assert probe is a and probe.down
        assert pool.acquire() is b  # one probe at a time
        pool.release(b), pool.release(a)
        assert pool.failed(a, "connection", probe=True) is True
        backoffs.append(a.down_until - clock.now)
    assert backoffs == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert a.times_down == 1  # failed probes do not count as new times out
    clock.now = a.down_until
    assert pool.acquire() is a
    pool.release(a)
    pool.succeeded(a, 3, 4, probe=True)
    assert not a.down and a.backoff == 0
    assert a.failures == {"connection": 8} and (a.prompt_tokens, a.completion_tokens) == (3, 4)


def test_failures_of_requests_sent_before_the_endpoint_went_out_do_not_push_its_probe_back():
    pool, clock = pool_of(2)
    a, _ = pool.endpoints
    pool.failed(a, "connection", probe=False)
    until = a.down_until
    clock.now += 0.5
    for _ in range(5):  # the other requests that were in flight on it
        assert pool.failed(a, "connection", probe=False) is True
    assert a.down_until == until and a.failures["connection"] == 6


def test_answers_to_requests_sent_before_the_endpoint_went_out_do_not_put_it_back():
    # A server shutting down finishes the requests it holds after it refuses new connections.
    pool, clock = pool_of(2)
    a, b = pool.endpoints
    pool.failed(a, "connection", probe=False)
    pool.succeeded(a, 5, 6, probe=False)
    assert a.down and not pool.any_up(besides=b) and a.completion_tokens == 6  # counted, still out
    assert pool.acquire() is b
    clock.now = a.down_until
    assert pool.acquire() is a  # the probe decides
    pool.release(a)
    pool.succeeded(a, 1, 1, probe=True)
    assert not a.down and a.times_down == 1


def test_server_errors_or_timeouts_take_an_endpoint_out_only_three_in_a_row():
    pool, _ = pool_of(2)
    a, b = pool.endpoints
    assert pool.failed(a, "http_503", probe=False) is False
    assert pool.failed(a, "timeout", probe=False) is False
    pool.succeeded(a, 0, 0, probe=False)  # an answer between them starts the count again
    assert pool.failed(a, "http_500", probe=False) is False
    assert pool.failed(a, "http_502", probe=False) is False
    assert not a.down
    assert pool.failed(a, "http_503", probe=False) is True
    assert a.down and a.times_down == 1


@pytest.mark.parametrize("kind", ["rate_limited", "invalid_body", "empty_choices"])
def test_errors_of_the_answer_never_take_an_endpoint_out(kind: str):
    pool, _ = pool_of(2)
    a, _ = pool.endpoints
    for _ in range(10):
        assert pool.failed(a, kind, probe=False) is False
    assert not a.down and a.failures == {kind: 10}


def test_with_every_endpoint_out_requests_go_to_the_one_due_first():
    pool, clock = pool_of(3)
    a, b, c = pool.endpoints
    for ep, seconds in ((a, 5.0), (b, 2.0), (c, 9.0)):
        pool.failed(ep, "connection", probe=False)
        ep.down_until = clock.now + seconds
    assert not pool.any_up()
    assert pool.acquire() is b
    assert pool.acquire() is a  # b has one in flight now
    pool.release(a), pool.release(b)
    clock.now += 9.0  # c's backoff is over
    assert pool.acquire() is c
    pool.release(c)
    pool.succeeded(c, 0, 0, probe=True)  # c answered its probe
    assert pool.any_up() and pool.any_up(besides=a) and not pool.any_up(besides=c)


def test_counts_add_up_over_earlier_runs_and_pools_and_urls_no_longer_used_are_kept():
    from selfinstruct.generation.dispatch import endpoint_counts
    from selfinstruct.records import EndpointCounts

    pool, _ = pool_of(2)
    other, _ = pool_of(1)  # another stage's model on the first URL
    a, _ = pool.endpoints
    pool.acquire()
    other.failed(other.endpoints[0], "timeout", False)
    earlier = {
        "u0": EndpointCounts(requests=10, failures={"connection": 2}, prompt_tokens=5, completion_tokens=6,
                             times_down=1),
        "old": EndpointCounts(requests=3, failures={}, prompt_tokens=1, completion_tokens=1, times_down=0),
    }  # fmt: skip
    counts = endpoint_counts(earlier, [pool, other])
    assert list(counts) == ["u0", "old", "u1"]
    u0 = counts["u0"]
    assert (u0.requests, u0.failures, u0.times_down, u0.prompt_tokens) == (
        11,
        {"connection": 2, "timeout": 1},
        1,
        5,
    )
    assert counts["old"].requests == 3 and counts["u1"].requests == 0
    assert a.sent == 1  # the choice weighs this process's requests only
    pool.succeeded(a, 7, 2, probe=False)
    assert counts["u0"].prompt_tokens == 12  # read live when stats.json is written


# The client ------------------------------------------------------------------------------------
def test_a_refused_connection_moves_the_request_to_another_endpoint_without_an_attempt():
    async def ask(live: str) -> LLMClient:
        client = LLMClient([DEAD, live], "fast-model", max_attempts=1)
        try:
            for _ in range(3):
                completion = await client.complete("1.", Sampling(max_tokens=8))
                assert completion.text
        finally:
            await client.close()
        return client

    with FastEndpoint() as live:
        client = asyncio.run(ask(live.url))
        assert live.requests == 3
    dead, up = client.pool.endpoints
    assert client.retries == {"connection": 1}  # later requests keep away from it
    assert (dead.requests, dead.failures, dead.times_down, dead.down) == (1, {"connection": 1}, 1, True)
    assert (up.requests, up.failures) == (3, {})


def test_the_third_server_error_in_a_row_takes_an_endpoint_out():
    """Each of the first two 503s is an attempt, retried elsewhere after a backoff (the request may
    be what the server fails on); the third in a row moves its request on at once, uncounted."""

    async def ask(failing: str, live: str) -> LLMClient:
        client = LLMClient([failing, live], "fast-model", max_attempts=2, max_wait=0.2)
        try:
            for _ in range(6):
                assert (await client.complete("1.", Sampling(max_tokens=8))).text
        finally:
            await client.close()
        return client

    with FastEndpoint() as live, FaultProxy(live.url, rate=1.0, kinds=["503"]) as failing:
        client = asyncio.run(ask(failing.url, live.url))
        assert (failing.injected, live.requests) == ({"503": 3}, 6)
    bad, good = client.pool.endpoints
    assert (bad.failures, bad.times_down, bad.down) == ({"http_503": 3}, 1, True)
    assert client.retries == {"http_503": 3} and good.failures == {}


# Runs through the CLI --------------------------------------------------------------------------
def command(base_urls: list[str], out: Path, n: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "selfinstruct", "run", "--backend", "openai", "--base-url", ",".join(base_urls),
        "-n", str(n), "-o", str(out), "--seed", "5", "--no-progress", *extra,
    ]  # fmt: skip


def wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)


def check_no_duplicates(out: Path) -> dict[str, list[dict]]:
    """No id, instruction or record twice in any stage file (test_faults' checks, and instruction
    texts of the classification and instance records too)."""
    records = check_run_dir(out)
    tasks = {r["id"]: r["instruction"] for r in records["machine_instructions"]}
    for name in ("classification", "instances"):
        assert all(tasks[r["id"]] == r["instruction"] for r in records[name]), name
    keys = [(r["id"], r["instruction"], r["input"], r["output"]) for r in records["dataset"]]
    assert len(keys) == len(set(keys)), "duplicate dataset records"
    return records


def test_a_run_goes_on_when_one_of_three_endpoints_is_killed(tmp_path: Path):
    out, target = tmp_path / "run", 150
    with FastEndpoint(0.01, seed=1) as a, FastEndpoint(0.01, seed=2) as b, FastEndpoint(0.01, seed=3) as c:
        proc = subprocess.Popen(
            command([a.url, b.url, c.url], out, target, "--concurrency", "12"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_for(lambda: len(complete_lines(out / "responses.jsonl")) >= 12, 60, proc)
        c.stop()  # killed mid-run, requests in flight
        killed_at = c.requests
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    assert f"accepted {target}/{target} instructions" in stdout
    records = check_no_duplicates(out)
    assert len(records["machine_instructions"]) == target
    assert {r["id"] for r in records["instances"]} == {r["id"] for r in records["machine_instructions"]}
    assert stderr.count(f"{c.url}: connection error — out of rotation") == 1
    stats = json.loads((out / "stats.json").read_text())
    counts = stats["endpoints"]
    assert list(counts) == [a.url, b.url, c.url]
    assert counts[c.url]["failures"]["connection"] >= 1 and counts[c.url]["times_down"] == 1
    assert counts[c.url]["requests"] > sum(counts[c.url]["failures"].values())  # it answered, then failed
    for e in (a, b):  # both took the rest, and never failed
        assert counts[e.url]["failures"] == {} and counts[e.url]["times_down"] == 0
        assert counts[e.url]["requests"] > killed_at
    # Sent = answered + failed (all retried) + cancelled when the target was reached.
    assert sum(n["requests"] for n in counts.values()) >= sum(stats["requests"].values())
    # Answers to prompts cancelled once the target was reached were paid but are not the run's.
    assert sum(n["completion_tokens"] for n in counts.values()) >= stats["tokens"]["completion"]


def test_every_endpoint_killed_ends_the_run_and_it_resumes_on_one_restarted(tmp_path: Path):
    out, target = tmp_path / "run", 60
    servers = [FastEndpoint(0.02, seed=s).start() for s in (1, 2, 3)]
    base_urls = [s.url for s in servers]
    cmd = command(base_urls, out, target, "--concurrency", "6", "--max-attempts", "2")
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: len(complete_lines(out / "machine_instructions.jsonl")) >= 5, 60, proc)
        for s in servers:
            s.stop()
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 2, stderr[-2000:]
        assert "Traceback" not in stderr
        last = stderr.strip().splitlines()[-1]
        print(f"\n{last}")
        assert last.startswith(f"error: every endpoint is down: {base_urls[0]} (connection), ")
        assert "persisted after 2 attempts" in last and last.endswith("everything accepted so far is saved")
        accepted = complete_lines(out / "machine_instructions.jsonl")
        assert 5 <= len(accepted) <= target
        assert len(complete_lines(out / "instances.jsonl")) < target  # it ended before the end
        before = json.loads((out / "stats.json").read_text())["endpoints"]

        servers[0] = FastEndpoint(0.02, seed=4, port=servers[0].port).start()  # one comes back
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        for s in servers:
            s.stop()
    assert result.returncode == 0, result.stderr[-2000:]
    for url in base_urls[1:]:  # one warning each for the two still down, and the run went on
        assert result.stderr.count(f"{url}/: endpoint unreachable after 2 attempts") == 1
    records = check_no_duplicates(out)
    assert len(records["machine_instructions"]) == target
    assert set(accepted) <= set(complete_lines(out / "machine_instructions.jsonl"))
    stats = json.loads((out / "stats.json").read_text())
    after = stats["endpoints"]
    assert after[base_urls[0]]["requests"] == before[base_urls[0]]["requests"] + servers[0].prompts
    for url in base_urls[1:]:  # carried from the first run; out from the start of the second
        assert after[url]["requests"] >= before[url]["requests"]
        assert after[url]["times_down"] == before[url]["times_down"] + 1


def test_a_slow_endpoint_gets_fewer_requests_than_a_fast_one(tmp_path: Path):
    out = tmp_path / "run"
    with FastEndpoint(latency=0.1, seed=1) as slow, FastEndpoint(latency=0.002, seed=2) as fast:
        result = subprocess.run(
            command([slow.url, fast.url], out, 100, "--concurrency", "2"),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    counts = json.loads((out / "stats.json").read_text())["endpoints"]
    print(f"\nslow endpoint: {slow.prompts} prompts, fast endpoint: {fast.prompts}")
    assert fast.prompts > 2 * slow.prompts
    for e in (slow, fast):  # sent as counted by the run, answered as counted by the server; they
        assert abs(counts[e.url]["requests"] - e.prompts) <= 2  # differ by those cancelled at the end
