"""`selfinstruct run`: validate everything, open the backend, run the pipeline, report."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from selfinstruct.config import RunConfig, load_config, public_dict
from selfinstruct.errors import EndpointError, UserError
from selfinstruct.filters import HeuristicFilter
from selfinstruct.generation.backends import Endpoint, check_backend, open_endpoint
from selfinstruct.generation.client import LLMClient
from selfinstruct.pipeline import Pipeline
from selfinstruct.stats import RunStats
from selfinstruct.tasks import SeedTask, load_seeds, write_json_atomic

log = logging.getLogger(__name__)


def run(
    config_path: Path | None, overrides: dict[str, Any], flag_names: dict[str, str], progress: bool
) -> int:
    # Check every input before anything slow starts.
    config = load_config(config_path, overrides, flag_names)
    seeds = load_seeds(config.seeds)
    config.resolve_auto([s.instruction for s in seeds])
    heuristics = HeuristicFilter.from_file(config.filters)
    check_backend(config.backend)
    run_dir = create_run_dir(config.output_dir or Path("outputs") / time.strftime("run-%Y%m%d-%H%M%S"))
    config.output_dir = run_dir
    write_json_atomic(run_dir / "config.json", public_dict(config))
    log.info("run directory: %s", run_dir)

    with open_endpoint(config.backend, run_dir / "vllm_server.log", config.seed) as endpoint:
        stats = asyncio.run(_generate(config, endpoint, seeds, heuristics, run_dir, progress))

    print(
        f"accepted {stats.accepted}/{stats.target} instructions "
        f"({stats.accepted}/{stats.candidates} candidates kept), "
        f"{stats.instances_kept} records in {run_dir / 'dataset.jsonl'}; "
        f"{stats.elapsed:.0f} s, {stats.tokens_per_second:.1f} tokens/s"
    )
    if stats.accepted < stats.target:
        print(
            f"stopped early: the request budget ({config.request_budget}) was spent "
            "— raise --max-requests or loosen the filters"
        )
        return 1
    return 0


def create_run_dir(path: Path) -> Path:
    """A new or empty directory; an existing run is never overwritten."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"{path}: output directory is not empty — choose another --output-dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / ".write-test").touch()
        (path / ".write-test").unlink()
    except OSError as exc:
        raise UserError(
            f"{path}: cannot write the output directory ({exc.strerror}) — choose another --output-dir"
        ) from None
    return path


async def _generate(
    config: RunConfig,
    endpoint: Endpoint,
    seeds: list[SeedTask],
    heuristics: HeuristicFilter,
    run_dir: Path,
    progress: bool,
) -> RunStats:
    backend = config.backend
    client = LLMClient(
        endpoint.base_urls,
        model=endpoint.model or "",
        api_key=endpoint.api_key,
        api=backend.api,
        timeout=backend.timeout,
        max_attempts=backend.max_attempts,
    )
    try:
        served = await client.list_models()
        if endpoint.model is None:
            if not served:
                raise EndpointError(f"{endpoint.base_urls[0]}: serves no model — pass --model")
            client.model = served[0]
        elif served and endpoint.model not in served:
            raise EndpointError(
                f"model {endpoint.model!r} is not served by {endpoint.base_urls[0]} "
                f"(it serves: {', '.join(served)}) — check --model"
            )
        if backend.model != client.model:
            config.backend.model = client.model
            write_json_atomic(run_dir / "config.json", public_dict(config))
        log.info("model %s at %s", client.model, ", ".join(endpoint.base_urls))
        pipeline = Pipeline(config, client, seeds, heuristics, run_dir, progress=progress)
        pipeline.stats.retries = client.retries
        return await pipeline.run()
    except EndpointError:
        if endpoint.server is not None:
            endpoint.server.check_alive()  # a dead server we started explains the failure better
        raise
    finally:
        await client.close()
