import os

import pytest


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
