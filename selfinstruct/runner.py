"""`selfinstruct run`: validate everything, open the backend, run the pipeline, report."""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from selfinstruct.budget import BudgetSpent
from selfinstruct.config import RunConfig, load_config, public_dict
from selfinstruct.errors import EndpointError, UserError
from selfinstruct.estimate import estimate, format_estimate, run_stages
from selfinstruct.filters import HeuristicFilter
from selfinstruct.generation.backends import REACHING_THE_ENDPOINT, check_backend, client_for, open_endpoint
from selfinstruct.generation.client import LLMClient
from selfinstruct.generation.dispatch import endpoint_counts
from selfinstruct.interrupts import run_async
from selfinstruct.locking import LOCK_NAME, exclusive
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
    "check_in_worker",
    *REACHING_THE_ENDPOINT,
    "classification.backend.base_urls",
    "instances.backend.base_urls",
    "judge.backend.base_urls",
    "price_input",
    "price_output",
    "token_budget",
    "cost_budget",
}


def run(
    config_path: Path | None,
    overrides: dict[str, Any],
    flag_names: dict[str, str],
    progress: bool,
    allow_changed_settings: bool = False,
    dry_run: bool = False,
) -> int:
    # Check every input before anything slow starts.
    config = load_config(config_path, overrides, flag_names)
    seeds = load_seeds(config.seeds)
    config.resolve_auto([s.instruction for s in seeds])
    heuristics = HeuristicFilter.from_file(config.filters)
    check_backends(config)
    if dry_run:
        print(dry_run_estimate(config, seeds, allow_changed_settings))
        return 0
    run_dir = config.output_dir or Path("outputs") / time.strftime("run-%Y%m%d-%H%M%S")
    config.output_dir = run_dir
    make_dir(run_dir)
    stopped = None
    with exclusive(run_dir, "run"):  # one run per directory, until this process ends
        resuming = prepare_run_dir(run_dir, config, allow_changed_settings)
        write_json_atomic(run_dir / "config.json", public_dict(config))
        log.info("%s run directory %s", "resuming the" if resuming else "new", run_dir)
        with ExitStack() as servers:
            endpoints = open_endpoints(config, run_dir, servers)
            try:
                with _fewer_collections():
                    stats = run_async(_generate(config, endpoints, seeds, heuristics, run_dir, progress))
            except BudgetSpent as exc:
                stats, stopped = exc.budget.stats, exc.budget

    print(summary_line(stats, run_dir / "dataset.jsonl"))
    if stopped is not None:
        print(stopped.message())
        return 1
    if stats.accepted < stats.target:
        print(
            f"stopped early: the request budget ({config.request_budget}) was spent "
            "— raise --max-requests or loosen the filters"
        )
        return 1
    return 0


def check_backends(config: RunConfig) -> None:
    """Each stage's backend can start; an error about a stage's own backend names its flags."""
    check_backend(config.backend)
    for stage in run_stages(config):
        if config.stage_backend(stage) is config.backend:
            continue
        try:
            check_backend(config.stage_backend(stage))
        except UserError as exc:
            raise UserError(str(exc).replace("--", f"--{stage}-")) from None


def _backend_key(backend) -> tuple:
    return backend.kind, backend.model, tuple(backend.base_urls)


def open_endpoints(config: RunConfig, run_dir: Path, servers: ExitStack) -> dict[str, tuple]:
    """Each stage's (backend, endpoint); stages on the same backend share its endpoint, and a server
    the run starts for a stage of its own logs to vllm_server-<stage>.log. The servers stop when
    `servers` closes."""
    opened: dict[tuple, object] = {}
    endpoints = {}
    for stage in run_stages(config):
        backend = config.stage_backend(stage)
        key = _backend_key(backend)
        if key not in opened:
            name = "vllm_server.log" if backend is config.backend else f"vllm_server-{stage}.log"
            opened[key] = servers.enter_context(open_endpoint(backend, run_dir / name, config.seed))
        endpoints[stage] = (backend, opened[key])
    return endpoints


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """The loop allocates many small objects that live for the whole run (tasks, records, index
    entries) and makes few reference cycles: with the default thresholds the cyclic collector
    rescans them over a thousand times in a 20K run. Objects alive before the loop are frozen out of
    its scans, and the youngest generation is collected every 50,000 allocations instead of 700."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def dry_run_estimate(config: RunConfig, seeds: list[SeedTask], allow_changed_settings: bool) -> str:
    """The estimate `run --dry-run` prints. An existing run directory is checked as a run would
    check it (same errors), and only read: no lock, nothing written."""
    run_dir = config.output_dir
    if run_dir is not None and run_dir.exists():
        if not run_dir.is_dir():
            raise UserError(f"{run_dir}: exists and is not a directory — choose another --output-dir")
        prepare_run_dir(run_dir, config, allow_changed_settings)
    return format_estimate(estimate(config, seeds, run_dir), config)


def make_dir(path: Path) -> None:
    """Create the run directory and its parents (the lock file in it is the first write)."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is not a directory — choose another --output-dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"{path}: cannot write the output directory ({exc.strerror}) — choose another --output-dir"
        ) from None


def _leftover(p: Path) -> bool:
    """The lock file, and temporary files a run stopped in mid-rename may leave."""
    return p.name == LOCK_NAME or p.name.endswith(".tmp")


def prepare_run_dir(path: Path, config: RunConfig, allow_changed_settings: bool) -> bool:
    """Check that a run directory is new, or holds a run with these settings and these seed and
    filter files (by content: a moved file with the same content may resume); True when resuming.

    A directory with other content is never touched.
    """
    saved_path = path / "config.json"
    if any(not _leftover(p) for p in path.iterdir()):
        if not saved_path.is_file():
            raise UserError(f"{path}: output directory is not empty — choose another --output-dir")
        # A setting added since the run was saved counts as its default.
        saved = _with_defaults(_read_saved_config(saved_path), RunConfig().model_dump(mode="json"))
        if config.backend.model is None:  # the served model a run found is saved under its name
            config.backend.model = saved.get("backend", {}).get("model")
        for stage in ("classification", "instances", "judge"):
            own = getattr(config, stage).backend
            if own.base_urls and own.model is None:
                own.model = saved.get(stage, {}).get("backend", {}).get("model")
        current = public_dict(config)
        saved_inputs, inputs = saved.pop("inputs", None), current.pop("inputs")
        edited = []
        if saved_inputs is not None:  # a run directory written before the hashes has none
            for key, what, setting in (("seeds_sha256", "seeds file", "seeds"),
                                       ("filters_sha256", "filter rules", "filters")):  # fmt: skip
                if saved_inputs.get(key) != inputs[key]:
                    edited.append(
                        f"{what} content changed since this run started ({getattr(config, setting)})"
                    )
                elif saved.get(setting) != current[setting]:
                    saved[setting] = current[setting]  # moved or renamed, same content
        changed = [k for k in differences(saved, current) if k not in RESUMABLE_CHANGES]
        if edited and not allow_changed_settings:
            raise UserError(
                f"{path}: {'; '.join(edited)} — put the original back, choose another --output-dir, "
                "or pass --allow-changed-settings"
            )
        if changed and not allow_changed_settings:
            raise UserError(
                f"{path}: holds a run with other settings ({', '.join(changed)}) — resume it with the same "
                "settings, choose another --output-dir, or pass --allow-changed-settings"
            )
        return True
    return False


def _with_defaults(saved: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The saved settings, with the defaults of those it does not have (settings a later version
    added: a run directory saved before them resumes as if they had their defaults)."""
    out = dict(saved)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _with_defaults(out[key], value)
    return out


def _read_saved_config(path: Path) -> dict[str, Any]:
    """The settings a run saved, checked as RunConfig checks them: a hand edit that breaks them is a
    UserError naming config.json. Settings this version does not know are left to the comparison."""
    fix = "restore the file or choose another --output-dir"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path}: not valid JSON — this directory cannot be resumed; {fix}") from None
    if not isinstance(saved, dict):
        raise UserError(f"{path}: not a JSON object of settings — this directory cannot be resumed; {fix}")
    inputs = saved.get("inputs")
    if "inputs" in saved and not (
        isinstance(inputs, dict) and all(isinstance(v, str) for v in inputs.values())
    ):
        raise UserError(f"{path}: inputs: expected an object of sha256 strings (got {inputs!r}) — {fix}")
    try:
        RunConfig.model_validate({k: v for k, v in saved.items() if k != "inputs"})
    except ValidationError as exc:
        errors = [e for e in exc.errors() if e["type"] != "extra_forbidden"]
        if errors:
            where = ".".join(str(p) for p in errors[0]["loc"])
            raise UserError(
                f"{path}: {where}: {errors[0]['msg']} (got {errors[0].get('input')!r}) — {fix}"
            ) from None
    return saved


def summary_line(stats: RunStats, dataset: Path) -> str:
    """The line a run ends with. A resume with a lower -n than earlier runs reached says so rather
    than print more accepted than the target."""
    if stats.accepted > stats.target:
        accepted = (
            f"target {stats.target} reached: {stats.accepted} instructions accepted "
            f"(earlier runs went past it; {stats.accepted}/{stats.candidates} candidates kept)"
        )
    else:
        accepted = (
            f"accepted {stats.accepted}/{stats.target} instructions "
            f"({stats.accepted}/{stats.candidates} candidates kept)"
        )
    line = (
        f"{accepted}, {stats.instances_kept} records in {dataset}; "
        f"{stats.elapsed:.0f} s, {stats.tokens_per_second:.1f} tokens/s"
    )
    if stats.prices is not None:
        line += f", {stats.prompt_tokens + stats.completion_tokens:,} tokens, ${stats.cost_usd:.4f}"
    return line


def differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in differences(a.get(k), b.get(k), f"{prefix}{k}.")]
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
    endpoints: dict[str, tuple],
    seeds: list[SeedTask],
    heuristics: HeuristicFilter,
    run_dir: Path,
    progress: bool,
) -> RunStats:
    """Open one client per distinct (endpoint, model, api) among the stages, find the models they
    serve, and run the pipeline."""
    clients: dict[tuple, LLMClient] = {}
    llms: dict[str, LLMClient] = {}
    try:
        for stage, (backend, endpoint) in endpoints.items():
            key = (id(endpoint), endpoint.model, backend.api)
            if key not in clients:
                client = clients[key] = client_for(endpoint, backend)
                try:
                    client.model = served_model(await client.list_models(), endpoint.model)
                except EndpointError as exc:
                    if endpoint.server is not None:
                        endpoint.server.check_alive()
                    raise EndpointError(
                        f"{stage} stage: {exc}" if stage != "instructions" else str(exc)
                    ) from None
                log.info("%s: model %s at %s", stage, client.model, ", ".join(endpoint.base_urls))
            llms[stage] = clients[key]
        if _save_served_models(config, llms):
            write_json_atomic(run_dir / "config.json", public_dict(config))
        pipeline = Pipeline(config, llms, seeds, heuristics, run_dir, progress=progress)
        retries = pipeline.stats.retries  # counts of earlier runs of this directory
        for client in clients.values():
            client.retries = retries  # one count for every client
        pipeline.stats.endpoints = endpoint_counts(
            pipeline.stats.endpoints, [c.pool for c in clients.values()]
        )
        try:
            return await pipeline.run()
        except EndpointError:
            for _, endpoint in endpoints.values():
                if endpoint.server is not None:
                    endpoint.server.check_alive()  # a dead server we started explains the failure better
            raise
    finally:
        for client in clients.values():
            await client.close()


def _save_served_models(config: RunConfig, llms: dict[str, LLMClient]) -> bool:
    """Record the model an endpoint serves where the settings named none, so that config.json says
    which model answered and a resume asks the same one; True when something changed."""
    changed = False
    if config.backend.model != llms["instructions"].model:
        config.backend.model = llms["instructions"].model
        changed = True
    for stage in ("classification", "instances", "judge"):
        own = getattr(config, stage).backend
        if stage in llms and own.base_urls and own.model is None:
            own.model = llms[stage].model
            changed = True
    return changed
