"""`selfinstruct run`: validate everything, open the backend, run the pipeline, report."""

from __future__ import annotations

import asyncio
import json
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


# Settings that may change when a run is resumed: they decide how far and how fast it goes, not
# what a record looks like. A changed target extends (or ends) a run.
RESUMABLE_CHANGES = {
    "output_dir",
    "num_instructions",
    "max_requests",
    "concurrency",
    "backend.base_urls",
    "backend.timeout",
    "backend.max_attempts",
    "backend.startup_timeout",
    "backend.server_args",
}


def run(
    config_path: Path | None,
    overrides: dict[str, Any],
    flag_names: dict[str, str],
    progress: bool,
    allow_changed_settings: bool = False,
) -> int:
    # Check every input before anything slow starts.
    config = load_config(config_path, overrides, flag_names)
    seeds = load_seeds(config.seeds)
    config.resolve_auto([s.instruction for s in seeds])
    heuristics = HeuristicFilter.from_file(config.filters)
    check_backend(config.backend)
    run_dir = config.output_dir or Path("outputs") / time.strftime("run-%Y%m%d-%H%M%S")
    config.output_dir = run_dir
    resuming = prepare_run_dir(run_dir, config, allow_changed_settings)
    write_json_atomic(run_dir / "config.json", public_dict(config))
    log.info("%s run directory %s", "resuming the" if resuming else "new", run_dir)

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


def prepare_run_dir(path: Path, config: RunConfig, allow_changed_settings: bool) -> bool:
    """Make a new run directory, or check that an existing one holds a run with these settings.

    Returns True when resuming. A directory with other content is never touched.
    """
    saved_path = path / "config.json"
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is not a directory — choose another --output-dir")
    if path.is_dir() and any(path.iterdir()):
        if not saved_path.is_file():
            raise UserError(f"{path}: output directory is not empty — choose another --output-dir")
        try:
            saved = json.loads(saved_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise UserError(f"{saved_path}: not valid JSON — this directory cannot be resumed") from None
        if config.backend.model is None:  # the served model a run found is saved under its name
            config.backend.model = saved.get("backend", {}).get("model")
        changed = [k for k in _differences(saved, public_dict(config)) if k not in RESUMABLE_CHANGES]
        if changed and not allow_changed_settings:
            raise UserError(
                f"{path}: holds a run with other settings ({', '.join(changed)}) — resume it with the same "
                "settings, choose another --output-dir, or pass --allow-changed-settings"
            )
        return True
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / ".write-test").touch()
        (path / ".write-test").unlink()
    except OSError as exc:
        raise UserError(
            f"{path}: cannot write the output directory ({exc.strerror}) — choose another --output-dir"
        ) from None
    return False


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def served_model(served: dict[str, list[str]], model: str | None) -> str:
    """The model to ask for: the one given, or else the first one the first endpoint lists; every
    endpoint that lists its models must serve it."""
    first_url, first = next(iter(served.items()))
    if model is None:
        if not first:
            raise EndpointError(f"{first_url}: serves no model — pass --model")
        model = first[0]
    for url, models in served.items():
        if models and model not in models:
            raise EndpointError(
                f"model {model!r} is not served by {url} (it serves: {', '.join(models)}) — check --model"
                + ("" if len(served) == 1 else " and that every --base-url serves the same model")
            )
    return model


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
        client.model = served_model(await client.list_models(), endpoint.model)
        if backend.model != client.model:
            config.backend.model = client.model
            write_json_atomic(run_dir / "config.json", public_dict(config))
        log.info("model %s at %s", client.model, ", ".join(endpoint.base_urls))
        pipeline = Pipeline(config, client, seeds, heuristics, run_dir, progress=progress)
        client.retries.update(pipeline.stats.retries)  # counts of earlier runs of this directory
        pipeline.stats.retries = client.retries
        return await pipeline.run()
    except EndpointError:
        if endpoint.server is not None:
            endpoint.server.check_alive()  # a dead server we started explains the failure better
        raise
    finally:
        await client.close()
