"""Content hashes of a run's input files, saved in config.json so that a resume can tell whether the
seed tasks or the filter rules were edited since the run started (a path alone cannot)."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path


def file_sha256(*paths: Path) -> str:
    """One sha256 over the files in order, each prefixed by its length (so that bytes cannot move
    from one file to the next unseen); a missing file counts as empty."""
    digest = hashlib.sha256()
    for path in paths:
        data = path.read_bytes() if path.is_file() else b""
        digest.update(b"%d:" % len(data))
        digest.update(data)
    return digest.hexdigest()


def filter_files(rules: Path) -> list[Path]:
    """The filter rules TOML and the keyword files it names, as HeuristicFilter reads them."""
    try:
        with open(rules, "rb") as f:
            names = tomllib.load(f).get("keywords", {}).get("files", [])
    except (OSError, tomllib.TOMLDecodeError, AttributeError):
        names = []  # HeuristicFilter.from_file reports a broken rules file before any run starts
    return [rules, *(rules.parent / str(name) for name in names)]


def input_hashes(seeds: Path, filters: Path) -> dict[str, str]:
    """The "inputs" entry of config.json."""
    return {"seeds_sha256": file_sha256(seeds), "filters_sha256": file_sha256(*filter_files(filters))}
