"""The README.md of an exported Hugging Face dataset folder (a dataset card).

YAML front matter the Hub reads — license, language, size_categories, task_categories, tags,
pretty_name and `configs` with the data files of each split (so `datasets.load_dataset(DIR)` finds
the splits) — and a body that says how the data was made: for a run directory, from its config.json
and files (model, seeds, settings, filters, the paper's Table 1, an equivalent command, the
citation); for a plain file, what the file was. Base URLs and local folders never appear.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from selfinstruct import __version__
from selfinstruct.filters.tokenizers import detect_language
from selfinstruct.fingerprints import file_sha256, filter_files
from selfinstruct.report.measures import PAPER_TABLE1, WORDS_NOTE, funnel, table1
from selfinstruct.resources import resource_path
from selfinstruct.sources import Source

# The Hub's size_categories buckets.
SIZE_BUCKETS = [
    (10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M"),
    (10**7, "1M<n<10M"), (10**8, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B"),
    (10**11, "10B<n<100B"), (10**12, "100B<n<1T"),
]  # fmt: skip
CITATION = """\
@inproceedings{wang-etal-2023-self-instruct,
    title = "Self-Instruct: Aligning Language Models with Self-Generated Instructions",
    author = "Wang, Yizhong and Kordi, Yeganeh and Mishra, Swaroop and Liu, Alisa and
      Smith, Noah A. and Khashabi, Daniel and Hajishirzi, Hannaneh",
    booktitle = "Proceedings of the 61st Annual Meeting of the Association for Computational
      Linguistics (Volume 1: Long Papers)",
    month = jul,
    year = "2023",
    address = "Toronto, Canada",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/2023.acl-long.754",
    doi = "10.18653/v1/2023.acl-long.754",
    pages = "13484--13508",
}"""
LAYOUTS = {
    "dataset": "a selfinstruct dataset.jsonl",
    "alpaca": "Alpaca records (instruction, input, output)",
    "seed": "Self-Instruct seed tasks (an instruction with its instances)",
    "messages": "chat records (messages: the first user turn, the last assistant turn)",
    "mixed": "records in several layouts",
}
STAGES = ("instructions", "classification", "instances", "judge")
SAMPLING = ("temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty")


@dataclass
class Split:
    name: str
    path: str  # inside the folder
    records: int
    tasks: int


def size_category(n: int) -> str:
    return next((name for limit, name in SIZE_BUCKETS if n < limit), "n>1T")


def render_card(source: Source, splits: list[Split], license: str, export_command: str) -> str:
    meta = front_matter(source, splits, license)
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{head}---\n\n" + "\n\n".join(body(source, splits, license, export_command)) + "\n"


def front_matter(source: Source, splits: list[Split], license: str) -> dict[str, Any]:
    tags = ["self-instruct", "synthetic", "instruction-tuning"] if source.is_run else ["instruction-tuning"]
    return {
        "license": license,
        "language": [language(source)],
        "size_categories": [size_category(sum(s.records for s in splits))],
        "task_categories": ["text-generation"],
        "tags": tags,
        "pretty_name": pretty_name(source),
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s.name, "path": s.path} for s in splits],
            }
        ],
    }


def language(source: Source) -> str:
    """en or zh: the run's prompt language, else what most of the instructions are written in."""
    if source.run is not None and source.run.config.get("language") in ("en", "zh"):
        return source.run.config["language"]
    return detect_language(source.instructions["instruction"].tolist()[:5000])


def pretty_name(source: Source) -> str:
    return f"Self-Instruct data ({source.path.name})" if source.is_run else source.path.stem


# The body ----------------------------------------------------------------------------------------
def body(source: Source, splits: list[Split], license: str, export_command: str) -> list[str]:
    n = sum(s.records for s in splits)
    if source.is_run:
        intro = (
            f"{n:,} instruction-following records made with selfinstruct {__version__}, an "
            "implementation of Self-Instruct (Wang et al., 2023): a language model wrote new task "
            "instructions from a few seed tasks, filters kept the novel and well-formed ones, and the "
            "model then wrote inputs and outputs for each."
        )
    else:
        intro = f"{n:,} instruction-following records, exported with selfinstruct {__version__}."
    parts = [f"# {pretty_name(source)}", intro, *_splits(splits), *_columns(source), *_statistics(source)]
    parts += _run_sections(source) if source.is_run else _file_sections(source)
    parts += ["## How this folder was made", _code(export_command)]
    parts += ["## License", _license(license, source.is_run)]
    if source.is_run:
        parts += ["## Citation", _code(CITATION, "bibtex")]
    return parts


def _splits(splits: list[Split]) -> list[str]:
    rows = [(f"`{s.name}`", f"{s.records:,}", f"{s.tasks:,}", f"`{s.path}`") for s in splits]
    note = (
        "Records are grouped by task (all instances of one instruction), and a task's records are all "
        "in one split."
    )
    return ["## Splits", _table(("split", "records", "tasks", "file"), rows), note]


def _columns(source: Source) -> list[str]:
    lines = [
        "- `instruction`: the task.",
        "- `input`: the task's input; empty when the instruction needs none.",
        "- `output`: the answer.",
        "- `id`: the record's id in the source"
        + (" (`TASK-N`: instance N of machine task TASK)." if source.is_run else "."),
    ]
    if source.records["is_classification"].notna().all():
        lines.append("- `is_classification`: whether the task has a small set of output labels.")
    chat = (
        "For chat fine-tuning, the user turn is the instruction, then a blank line and the input when "
        "there is one; the assistant turn is the output (`python -m selfinstruct export ... --format "
        "messages` writes that layout)."
    )
    return ["## Columns", "\n".join(lines), chat]


def _file_sections(source: Source) -> list[str]:
    digest = hashlib.sha256(source.path.read_bytes()).hexdigest()
    return [
        "## Source",
        f"The records come from the file `{source.path.name}` (sha256 `{digest}`), read as "
        f"{LAYOUTS.get(source.layout, source.layout)}. How they were generated is not recorded: this "
        "card describes the file only.",
    ]


def _statistics(source: Source) -> list[str]:
    t, p = table1(source), PAPER_TABLE1
    rows = [
        ("instructions", _n(t["instructions"]), _n(p["instructions"])),
        ("classification instructions", _n(t["classification_instructions"]),
         _n(p["classification_instructions"])),
        ("instances", _n(t["instances"]), _n(p["instances"])),
        ("instances with an empty input", _n(t["empty_input_instances"]), _n(p["empty_input_instances"])),
        ("average words: instruction", _n(t["avg_words"]["instruction"]), p["avg_words"]["instruction"]),
        ("average words: non-empty input", _n(t["avg_words"]["input_nonempty"]),
         p["avg_words"]["input_nonempty"]),
        ("average words: output", _n(t["avg_words"]["output"]), p["avg_words"]["output"]),
    ]  # fmt: skip
    header = ("", "this data", "Self-Instruct paper (GPT-3, Table 1)")
    return ["## Statistics", _table(header, rows), WORDS_NOTE]


# A run directory: how it was made --------------------------------------------------------------
def _run_sections(source: Source) -> list[str]:
    config = source.run.config
    backend, inputs = _section(config, "backend"), _section(config, "inputs")
    seeds, rules = Path(str(config.get("seeds", "?"))), Path(str(config.get("filters", "?")))
    facts = [
        f"- Model: {_model(backend)}.",
        f"- Seed tasks: `{seeds.name}` ({_fingerprint(inputs.get('seeds_sha256'), [seeds])}).",
        f"- Tool: selfinstruct {__version__} (exported; the run's own version is not recorded).",
    ]
    settings = [
        ("target (accepted instructions)", _value(config.get("num_instructions"))),
        ("ROUGE-L threshold (reject above)", _value(config.get("rouge_threshold"))),
        ("ROUGE-L tokenizer", _value(config.get("tokenizer"))),
        ("prompt language", _value(config.get("language"))),
        ("demos per prompt (from the machine pool)",
         f"{_value(config.get('num_demos'))} ({_value(config.get('num_machine_demos'))})"),
        ("most instances per task", _value(config.get("max_instances"))),
        ("near-duplicate threshold (MinHash Jaccard)", _value(config.get("near_duplicate_threshold"))),
        ("request budget", _value(config.get("max_requests"), "default (50 + 20 per target)")),
        ("requests in flight", _value(config.get("concurrency"))),
        ("seed", _value(config.get("seed"), "none")),
    ]  # fmt: skip
    sampling = [
        (f"`{stage}`", *(_value(_section(config, stage).get(k)) for k in SAMPLING))
        for stage in STAGES
        if stage != "judge" or _section(config, "judge").get("enabled")
    ]
    command, toml = run_command(config)
    how = [
        "## How it was made",
        "\n".join(facts),
        "### Settings",
        _table(("setting", "value"), settings),
        "### Sampling per stage",
        _table(("stage", *SAMPLING), sampling),
        *_filters(source, rules, inputs),
        "### The run as a command",
        "An equivalent command (file names only; `URL` stands for the endpoint's address, which is not "
        "recorded here):",
    ]
    if toml:
        how += ["`run.toml`, for the settings that have no flag:", _code(toml, "toml")]
    return how + [_code(command)]


def _filters(source: Source, rules: Path, inputs: dict[str, Any]) -> list[str]:
    f = funnel(source)
    rejected = [(f"`{reason}`", f"{n:,}") for reason, n in f["rejected"].items()]
    dropped = [(f"`{reason}`", f"{n:,}") for reason, n in f["instances"]["dropped"].items()]
    inst = f["instances"]
    lines = [
        "### Filters",
        f"Rules: `{rules.name}` ({_fingerprint(inputs.get('filters_sha256'), filter_files(rules))}; "
        "the fingerprint covers the rules file and the keyword files it names).",
        f"Instructions: {f['candidates']:,} candidates, {f['accepted']:,} accepted, "
        + (
            f"rejected by reason:\n\n{_table(('reason', 'rejected'), rejected)}"
            if rejected
            else "none rejected."
        ),
        f"Instances: {inst['generated']:,} generated for {inst['tasks']:,} tasks, {inst['kept']:,} kept, "
        + (f"dropped by reason:\n\n{_table(('reason', 'dropped'), dropped)}" if dropped else "none dropped."),
    ]
    return lines


def _model(backend: dict[str, Any]) -> str:
    from selfinstruct.generation.embedded import GGUF_NAME, MODEL_NAME, PACKAGE

    kind, model, api = backend.get("kind"), backend.get("model"), backend.get("api", "completions")
    if kind == "embedded":
        return (
            f"`{MODEL_NAME}` (the embedded default: `{GGUF_NAME}` from the PyPI package `{PACKAGE}`), on a "
            f"vLLM server the run started (backend `embedded`, {api} API)"
        )
    name = f"`{_model_name(model)}`" if model else "the first model the endpoint listed"
    where = "a vLLM server the run started" if kind == "vllm" else "an OpenAI-compatible endpoint"
    return f"{name}, on {where} (backend `{kind}`, {api} API)"


def _model_name(model: str) -> str:
    """A hub id as is; a local folder by its name only."""
    if model.startswith(("/", ".", "~")) or "\\" in model:
        return f"{Path(model).name} (a local folder)"
    return model


def _fingerprint(recorded: str | None, files: list[Path]) -> str:
    """A file's fingerprint as config.json records it (fingerprints.file_sha256: sha256 over each
    file's length, a colon and its bytes), with what `sha256sum` says when the file is unchanged."""
    if not recorded:
        return "fingerprint not recorded"
    text = f"selfinstruct fingerprint `{recorded}`"
    if len(files) == 1 and files[0].is_file() and file_sha256(files[0]) == recorded:
        text += f", sha256 `{hashlib.sha256(files[0].read_bytes()).hexdigest()}`"
    return text


# An equivalent `run` command -------------------------------------------------------------------
def run_command(config: dict[str, Any]) -> tuple[str, str]:
    """`python -m selfinstruct run ...` with the settings of a run's config.json, and the TOML of
    the settings no flag sets that differ from the defaults ("" when there are none).

    Flags are given for settings that differ from the defaults, and always for the target, the
    output folder, the language and the tokenizer (config.json holds them resolved, not `auto`).
    A stage's sampling that differs goes into the TOML whole: a partial [stage] table or a sampling
    flag fills the other fields from Sampling's generic defaults, not from that stage's. Paths
    become file names; base URLs become `URL`; a seed or rules file with the content of the
    project's default is left to the default.
    """
    from selfinstruct.config import RunConfig
    from selfinstruct.flags import config_flags

    default_config = RunConfig().model_dump(mode="json")
    defaults = _flatten(default_config)
    flag_of = {flag.key: flag.name for flag in config_flags(RunConfig)}
    args = ["python", "-m", "selfinstruct", "run"]
    toml: dict[str, Any] = {}
    always = ("num_instructions", "language", "tokenizer")
    for key, value in _flatten(config).items():
        section = key.partition(".")[0]
        if key not in defaults or section in (*STAGES, "seeds", "filters", "output_dir"):
            continue
        if key == "backend.base_urls":
            args += ["--base-url", ",".join(["URL"] * len(value))] if value else []
        elif key == "backend.server_args":
            args += [f"--server-arg={arg}" for arg in value or []]
        elif value is None or (value == defaults[key] and key not in always):
            continue
        elif key in flag_of:
            args += [flag_of[key], str(value)]
        else:
            toml[key] = value
    for stage in STAGES:
        settings = {k: v for k, v in _section(config, stage).items() if k != "backend"}
        if settings and settings != {k: v for k, v in default_config[stage].items() if k != "backend"}:
            toml |= {f"{stage}.{k}": v for k, v in settings.items()}
        own = _section(_section(config, stage), "backend")  # a stage's own model: flags
        for name, value in own.items():
            flag = flag_of.get(f"{stage}.backend.{name}")
            if flag and value not in (None, []):
                args += [flag, ",".join(["URL"] * len(value)) if name == "base_urls" else str(value)]
    inputs = _section(config, "inputs")
    if inputs.get("seeds_sha256") != file_sha256(resource_path("seeds/en.jsonl")):
        args += ["--seeds", Path(str(config.get("seeds", "seeds.jsonl"))).name]
    if inputs.get("filters_sha256") != file_sha256(*filter_files(resource_path("filters/default.toml"))):
        args += ["--filters", Path(str(config.get("filters", "filters.toml"))).name]
    args += ["-o", Path(str(config.get("output_dir") or "run")).name]
    if toml:
        args[4:4] = ["--config", "run.toml"]
    return shlex.join(args), _toml(toml)


def _flatten(config: dict[str, Any]) -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat |= {f"{key}.{k}": v for k, v in value.items()}
        else:
            flat[key] = value
    return flat


def _toml(settings: dict[str, Any]) -> str:
    top = [f"{k} = {_toml_value(v)}" for k, v in settings.items() if "." not in k]
    tables: dict[str, list[str]] = {}
    for key, value in settings.items():
        if "." in key:
            table, _, leaf = key.partition(".")
            tables.setdefault(table, []).append(f"{leaf} = {_toml_value(value)}")
    blocks = ["\n".join(top)] if top else []
    blocks += [f"[{name}]\n" + "\n".join(lines) for name, lines in tables.items()]
    return "\n\n".join(blocks)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


# Markdown helpers ------------------------------------------------------------------------------
def _section(config: dict[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def _value(value: Any, missing: str = "not recorded") -> str:
    return missing if value is None else str(value)


def _n(value: Any) -> str:
    if value is None:
        return "not known"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    def cells(row):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |"

    return "\n".join([cells(header), "|" + " --- |" * len(header), *map(cells, rows)])


def _code(text: str, lang: str = "") -> str:
    return f"```{lang}\n{text}\n```"


def _license(license: str, is_run: bool) -> str:
    terms = (
        "the terms of the model that wrote it and of the seed tasks" if is_run else "the terms of its source"
    )
    if license == "unknown":
        return (
            "The license of this data is unknown: none was given when it was exported (`--license`). "
            f"Check {terms} before you share or use it."
        )
    return f"`{license}`, as given when the data was exported; {terms} may also apply."
