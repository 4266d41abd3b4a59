"""Every setting of a run (and of `score`), in one place: pydantic models, read from TOML,
overridden from the CLI.

The `run` and `score` commands' flags are derived from these models (see flags.py): a new field is a new flag,
with its description as the help; `Flag(...)` beside a field spells its flag differently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from selfinstruct import tasks
from selfinstruct.errors import UserError
from selfinstruct.filters.tokenizers import default_tokenizer, detect_language
from selfinstruct.fingerprints import input_hashes
from selfinstruct.flags import Flag, FlagGroup
from selfinstruct.resources import resource_path


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Sampling(_Section):
    """Sampling settings of one kind of request."""

    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature.")
    top_p: float = Field(0.5, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(1024, gt=0, description="Most tokens the model may write per request.")
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="OpenAI presence penalty.")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="OpenAI frequency penalty.")


class Backend(_Section):
    """Where the model runs and how it is reached."""

    kind: Annotated[Literal["embedded", "vllm", "openai"], Flag("backend")] = Field(
        "embedded",
        description="embedded: the bundled CPU model on a vLLM server the run starts; "
        "vllm: a vLLM server the run starts for `model`; openai: an existing endpoint.",
    )
    model: str | None = Field(
        None,
        description="Model name or path (vllm), or served model name (openai; default: the first listed).",
    )
    base_urls: Annotated[list[str], Flag("base-url", split=",")] = Field(
        default_factory=list,
        description="OpenAI-compatible base URLs (openai backend); each request goes to the one with the "
        "fewest in flight, and one that stops answering is left out until it answers again.",
    )
    api: Literal["completions", "chat"] = Field(
        "completions", description="Endpoint for generation; the paper's prompts use completions."
    )
    timeout: float = Field(300.0, gt=0, description="Seconds to wait for one response.")
    max_attempts: int = Field(6, ge=1, description="Tries per request on transient errors.")
    max_batch: int = Field(
        32,
        ge=1,
        description="Most prompts sent together in one completions request when several are ready at "
        "once (never more than leaves each endpoint in rotation a share); 1 for an endpoint that takes "
        "one prompt per request.",
    )
    startup_timeout: float = Field(900.0, gt=0, description="Seconds to wait for a started server.")
    server_args: Annotated[list[str], Flag("server-arg")] = Field(
        default_factory=list, description="Extra command-line arguments for a vLLM server the run starts."
    )


class StageBackend(_Section):
    """Another model for one stage; what is not set here is the run's backend's.

    A base URL makes it an existing endpoint (kind openai); a model alone is that model on the run's
    endpoint (openai), or on a vLLM server the run starts for it (vllm, embedded).
    """

    kind: Annotated[Literal["embedded", "vllm", "openai"] | None, Flag("backend")] = Field(
        None, description="embedded, vllm or openai, as --backend (default: from the other settings)."
    )
    model: str | None = Field(None, description="Model name or path for this stage.")
    base_urls: Annotated[list[str], Flag("base-url", split=",")] = Field(
        default_factory=list, description="OpenAI-compatible base URLs for this stage."
    )
    api: Literal["completions", "chat"] | None = Field(
        None, description="completions or chat for this stage (default: the run's --api)."
    )

    def resolve(self, run: Backend) -> Backend:
        """The backend this stage uses: the run's, with this section's settings applied."""
        if self == StageBackend():
            return run
        if self.kind is not None:
            kind = self.kind
        elif self.base_urls:
            kind = "openai"
        elif self.model and run.kind != "openai":
            kind = "vllm"  # a model of its own, on a server the run starts for it
        else:
            kind = run.kind
        urls = self.base_urls or (run.base_urls if kind == "openai" == run.kind else [])
        same_place = kind == run.kind and urls == run.base_urls
        return run.model_copy(
            update={
                "kind": kind,
                "model": self.model or (run.model if same_place else None),
                "base_urls": urls,
                "api": self.api or run.api,
            }
        )


class StageSampling(Sampling):
    """Sampling settings of one kind of request, and the model that answers it."""

    backend: Annotated[StageBackend, FlagGroup()] = Field(
        default_factory=StageBackend, description="This stage's model (default: the run's)."
    )


class Judge(StageSampling):
    """The LLM judge: each dataset record rated 1-5 with a rubric (selfinstruct.judge)."""

    enabled: Annotated[bool, Flag("--judge")] = Field(
        False, description="Rate every record 1-5 with an LLM judge; score and score_reason in dataset.jsonl."
    )
    min_score: Annotated[int | None, Flag("--min-score")] = Field(
        None, ge=1, le=5, description="Keep only records the judge scores at least this (drop: low_score)."
    )
    unparsed: Literal["drop", "keep"] = Field(
        "drop",
        description="A record whose judge answer could not be read: drop it (reason unparsed_score) or "
        "keep it without a score.",
    )


# A score and one sentence (selfinstruct.judge), read the same way every time.
JUDGE_SAMPLING = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 160}


class RunConfig(_Section):
    """Settings of `selfinstruct run`."""

    seeds: Path = Field(
        default_factory=lambda: resource_path("seeds/en.jsonl"),
        description="Seed tasks: Self-Instruct seed JSONL, or Alpaca JSON/JSONL.",
    )
    output_dir: Annotated[Path | None, Flag(short="-o")] = Field(
        None, description="Run directory (default: outputs/run-<time>)."
    )
    num_instructions: Annotated[int, Flag(short="-n")] = Field(
        20, gt=0, description="Accepted machine instructions to generate."
    )
    concurrency: int = Field(16, ge=1, description="Requests in flight at once.")
    seed: int | None = Field(
        None, description="Seed for demo sampling, and the engine seed of a server the run starts."
    )
    num_demos: int = Field(8, ge=1, description="Instructions shown per bootstrap prompt.")
    num_machine_demos: int = Field(
        2, ge=0, description="How many of the demos come from the machine pool once it has enough."
    )
    rouge_threshold: float = Field(
        0.7,
        gt=0,
        le=1,
        description="Reject an instruction whose ROUGE-L F against any pool item is above this.",
    )
    language: Literal["auto", "en", "zh"] = Field(
        "auto", description="Prompt language; auto: Chinese when the seeds are mostly CJK text, else English."
    )
    tokenizer: Literal["auto", "rouge", "unicode"] = Field(
        "auto",
        description="ROUGE-L tokens; auto: rouge_score's for unaccented Latin text, else the Unicode one.",
    )
    filters: Path = Field(
        default_factory=lambda: resource_path("filters/default.toml"),
        description="Heuristic filter rules, a TOML file.",
    )
    max_instances: int = Field(5, ge=1, description="Most instances kept per task.")
    near_duplicate_threshold: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Drop records whose instruction + input has MinHash Jaccard >= this to another task's",
    )
    check_language: bool = Field(
        True,
        description="Drop records whose instruction or output is in another language than the run's "
        "(reason wrong_language; py3langid, prose of 20+ letters only).",
    )
    check_in_worker: bool = Field(
        True,
        description="Check the records (instance rules, language rule, near duplicates) in a worker "
        "process beside the run's own when the target is 500 or more; off: in the run's own process.",
    )
    max_requests: int | None = Field(
        None, ge=1, description="Stop bootstrapping after this many requests (default: 50 + 20 per target)."
    )
    price_input: float | None = Field(
        None,
        ge=0,
        description="USD per million prompt tokens: the run's cost in stats.json, progress, summary.",
    )
    price_output: float | None = Field(
        None, ge=0, description="USD per million completion tokens (give it with price_input)."
    )
    token_budget: int | None = Field(
        None,
        gt=0,
        description="Send no new request once this many prompt + completion tokens are spent, counting "
        "every run of the output directory; requests in flight finish (the total may pass it a little).",
    )
    cost_budget: float | None = Field(
        None,
        gt=0,
        description="As token_budget, in USD at price_input and price_output (both needed).",
    )
    instructions: Annotated[Sampling, FlagGroup()] = Field(
        default_factory=lambda: Sampling(temperature=0.7, top_p=0.5, max_tokens=1024, presence_penalty=2.0),
        description="Sampling for instruction generation.",
    )
    classification: Annotated[StageSampling, FlagGroup("classification-")] = Field(
        default_factory=lambda: StageSampling(temperature=0.0, top_p=1.0, max_tokens=3),
        description="Sampling and model for the classification check.",
    )
    instances: Annotated[StageSampling, FlagGroup("instances-")] = Field(
        default_factory=lambda: StageSampling(temperature=0.0, top_p=1.0, max_tokens=300),
        description="Sampling and model for instance generation.",
    )
    judge: Annotated[Judge, FlagGroup("judge-")] = Field(
        default_factory=lambda: Judge(**JUDGE_SAMPLING),
        description="The LLM judge: whether it runs, its threshold, sampling and model.",
    )
    backend: Annotated[Backend, FlagGroup()] = Field(default_factory=Backend, description="Model endpoint.")

    @property
    def request_budget(self) -> int:
        return self.max_requests or 50 + 20 * self.num_instructions

    @property
    def prices(self) -> tuple[float, float] | None:
        """(USD per million prompt tokens, per million completion tokens), or None when unpriced."""
        if self.price_input is None or self.price_output is None:
            return None
        return self.price_input, self.price_output

    def stage_backend(self, stage: str) -> Backend:
        """The backend a stage's requests go to: the run's, unless the stage names its own."""
        section = getattr(self, stage)
        return section.backend.resolve(self.backend) if isinstance(section, StageSampling) else self.backend

    def resolve_auto(self, seed_instructions: list[str]) -> None:
        """Replace `auto` language and tokenizer by what the seed instructions call for."""
        if self.language == "auto":
            self.language = detect_language(seed_instructions)
        if self.tokenizer == "auto":
            self.tokenizer = default_tokenizer(seed_instructions)


class ScoreConfig(_Section):
    """Settings of `selfinstruct score`."""

    concurrency: int = Field(16, ge=1, description="Requests in flight at once.")
    min_score: Annotated[int | None, Flag("--min-score")] = Field(
        None,
        ge=1,
        le=5,
        description="Write only records the judge scores at least this (the rest: low_score).",
    )
    unparsed: Annotated[Literal["drop", "keep"], Flag("--judge-unparsed")] = Field(
        "drop",
        description="A record whose judge answer could not be read: leave it out, or write it with score "
        "null.",
    )
    language: Literal["auto", "en", "zh"] = Field(
        "auto",
        description="Rubric language; auto: Chinese when the instructions are mostly CJK text, else English.",
    )
    seed: int | None = Field(None, description="The engine seed of a server the command starts.")
    judge: Annotated[Sampling, FlagGroup("judge-")] = Field(
        default_factory=lambda: Sampling(**JUDGE_SAMPLING),
        description="Sampling for the judge.",
    )
    backend: Annotated[Backend, FlagGroup()] = Field(default_factory=Backend, description="Model endpoint.")


STAGES = ("instructions", "classification", "instances", "judge")


def load_config(
    path: Path | None,
    overrides: dict[str, Any],
    flag_names: dict[str, str],
    model: type[_Section] = RunConfig,
    command: str = "run",
) -> Any:
    """Merge a TOML file and CLI overrides (dotted keys) and validate them in one place, as a
    `model` (RunConfig, or the settings of another command that reads a --config file).

    flag_names maps a dotted key to the CLI flag that set it, so errors name what the user typed.
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = read_toml(path)
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):  # e.g. `backend = "openai"` in the file and --model given
                raise UserError(_not_a_table(model, path, key, node))
        node[leaf] = value
    for name, field in model.model_fields.items():  # a partial table keeps the section's own defaults
        if isinstance(data.get(name), dict) and field.default_factory is not None:
            data[name] = field.default_factory().model_dump() | data[name]
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        raise UserError(_describe(exc, path, overrides, flag_names, model, command)) from None
    if isinstance(config, RunConfig):
        _check_prices(config, path, overrides, flag_names)
    return config


def _check_prices(config: RunConfig, path: Path | None, overrides: dict, flag_names: dict) -> None:
    """Prices come in pairs, and a cost budget needs them."""

    def where(key: str) -> str:
        return flag_names[key] if key in overrides else f"{path or 'config'}: {key}"

    given = [k for k in ("price_input", "price_output") if getattr(config, k) is not None]
    if len(given) == 1:
        missing = "--price-output" if given[0] == "price_input" else "--price-input"
        raise UserError(
            f"{where(given[0])}: a price needs its pair — pass {missing} too (USD per million tokens; "
            "0 when that side is free)"
        )
    if config.cost_budget is not None and not given:
        raise UserError(
            f"{where('cost_budget')}: a cost budget needs prices — pass --price-input and --price-output "
            "(USD per million prompt and completion tokens), or use --token-budget"
        )


def _not_a_table(model: type[_Section], path: Path | None, key: str, value: Any) -> str:
    section = model.model_fields[key].annotation
    first = next(iter(section.model_fields)) if isinstance(section, type) else "..."
    return (
        f"{path}: {key}: expected a table ([{key}] with {first} = ...) — got {value!r}; "
        f"write the setting on its own line under a [{key}] header"
    )


def read_toml(path: Path) -> dict[str, Any]:
    return tasks.read_toml(path, "config file not found — check the --config path")


def _describe(
    exc: ValidationError, path: Path | None, overrides: dict, flag_names: dict, model: type, command: str
) -> str:
    parts = []
    for err in exc.errors():
        dotted = ".".join(str(p) for p in err["loc"])
        where = flag_names.get(dotted) if dotted in overrides else f"{path or 'config'}: {dotted}"
        if err["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown setting — see `python -m selfinstruct {command} --help`")
        elif err["type"] == "model_type" and dotted in model.model_fields and dotted not in overrides:
            parts.append(_not_a_table(model, path, dotted, err.get("input")))
        else:
            parts.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


def public_dict(config: RunConfig) -> dict[str, Any]:
    """The resolved settings as saved in config.json (secrets are never part of RunConfig), with
    the content hashes of the seed and filter files under "inputs"."""
    return config.model_dump(mode="json") | {"inputs": input_hashes(config.seeds, config.filters)}
