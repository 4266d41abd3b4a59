import os
from pathlib import Path

import pytest
from clirun import EMBEDDED_TARGET, SECRET, selfinstruct


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    """One real vLLM CPU server for the whole session, serving the embedded model.

    Started with the same launcher the embedded backend uses; stopped by its PID at the end, and
    checked to leave no process of its group behind.
    """
    from selfinstruct.config import Backend
    from selfinstruct.generation.backends import server_for

    log_path = tmp_path_factory.mktemp("server") / "vllm_server.log"
    server = server_for(Backend(kind="embedded"), log_path, seed=0)
    server.start()
    yield server
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(server.process.pid, 0)


@pytest.fixture(scope="session")
def embedded_run(vllm_server, tmp_path_factory) -> Path:
    """One run directory made by the real CLI against the real server, shared by the tests that read
    a run (e2e, report, export). An API key is set, to check that it is never written."""
    out = tmp_path_factory.mktemp("run") / "run"
    result = selfinstruct(
        "run", "--backend", "openai", "--base-url", vllm_server.base_url,
        "-n", str(EMBEDDED_TARGET), "-o", str(out), "--seed", "3", "--concurrency", "8", "--no-progress",
        env={"OPENAI_API_KEY": SECRET}, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"accepted {EMBEDDED_TARGET}/{EMBEDDED_TARGET} instructions" in result.stdout
    (out.parent / "cli-output.log").write_text(result.stdout + result.stderr)
    return out
