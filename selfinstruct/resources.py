"""Files the project ships beside the package: seed sets, filter rules."""

from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent
_PACKAGED = Path(__file__).resolve().parent / "_data"


def resource_path(relative: str) -> Path:
    """Path of a shipped file: from the source tree, else from the copy inside an installed wheel."""
    for root in (_REPO_ROOT, _PACKAGED):
        candidate = root / relative
        if candidate.exists():
            return candidate
    return _REPO_ROOT / relative


def shipped_name(path: Path) -> str:
    """A path under the shipped files' roots as resource_path takes it (seeds/en.jsonl), else as it is."""
    for root in (_REPO_ROOT, _PACKAGED):
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return str(path)
