"""Safe resume of a training run: the same config, from a complete checkpoint, or not at all.

A run folder stores a fingerprint of the config fields that shape training (every field but
the class's `NOT_TRAINING`) in `train_fingerprint.json`. `check_resume` compares it with the
new run's: a different learning rate or LoRA rank stops the run with the differing fields
named, instead of silently resuming the old run or failing to load its weights. Checkpoints
cut off while being written (a kill during save) are skipped. Torch-free: the Trainer calls
`trainer.train(resume_from_checkpoint=check_resume(out_dir, cfg))`.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import zipfile
from pathlib import Path

from .atomic import write_text
from .configs import ConfigError

log = logging.getLogger("lmsys_pref.resume")
FINGERPRINT = "train_fingerprint.json"
CHECKPOINTS = "checkpoints"
CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")
WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "adapter_model.bin")
TORCH_ZIPS = ("*.bin", "*.pt", "*.pth")  # torch.save writes zip archives, central dir last


class ResumeError(ConfigError):
    """The checkpoints in OUT_DIR were made with another config."""


def fingerprint(cfg) -> dict:
    """The config fields that shape training, as a JSON-able mapping."""
    skip = set(type(cfg).NOT_TRAINING)
    return {k: v for k, v in cfg.to_dict().items() if k not in skip}


def differing_fields(old: dict, new: dict) -> list[str]:
    """'field: old -> new' for every field whose value differs (or exists on one side only)."""
    return [f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or n > size - 8:
                return "header cut off"
            header = json.loads(f.read(n))
    except (OSError, ValueError) as err:
        return f"unreadable header ({err})"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return None if size >= 8 + n + max(ends, default=0) else "tensor data cut off"


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from (None when it is complete)."""
    if not (ckpt / "trainer_state.json").is_file():
        return "no trainer_state.json"
    for path in sorted(ckpt.glob("*.json")):
        try:
            json.loads(path.read_text())
        except (OSError, ValueError):
            return f"{path.name} is cut off"
    if not any(p for pattern in WEIGHTS for p in ckpt.glob(pattern)):
        return "no weight file"
    for path in sorted(ckpt.glob("*.safetensors")):
        problem = _safetensors_problem(path)
        if problem:
            return f"{path.name}: {problem}"
    for path in sorted(p for pattern in TORCH_ZIPS for p in ckpt.glob(pattern)):
        try:
            zipfile.ZipFile(path).close()
        except (OSError, zipfile.BadZipFile):
            return f"{path.name} is cut off"
    return None


def _checkpoints(ckpt_dir: Path) -> list[Path]:
    """`checkpoint-N` folders, newest (highest N) first."""
    found = [p for p in ckpt_dir.iterdir() if p.is_dir() and CHECKPOINT_DIR.fullmatch(p.name)] \
        if ckpt_dir.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]), reverse=True)


def last_complete_checkpoint(ckpt_dir: str | Path, remove_incomplete: bool = False
                             ) -> str | None:
    """The newest complete `checkpoint-N` folder in `ckpt_dir` (None when there is none).

    Incomplete ones (see `checkpoint_problem`) are skipped with a warning, and deleted when
    `remove_incomplete` (a cut-off checkpoint can never be used, and the Trainer would later
    save into the same folder name).
    """
    for ckpt in _checkpoints(Path(ckpt_dir)):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            return str(ckpt)
        log.warning("skipping incomplete checkpoint %s (%s)%s", ckpt, problem,
                    "; removed" if remove_incomplete else "")
        if remove_incomplete:
            shutil.rmtree(ckpt, ignore_errors=True)
    return None


def check_resume(out_dir: str | Path, cfg, ckpt_dir: str | Path | None = None) -> str | None:
    """Record the run's fingerprint and return the checkpoint to resume from (or None).

    With `cfg.resume` false the old checkpoints are removed and training starts over. With
    checkpoints made under another fingerprint (or none recorded) it raises `ResumeError`
    listing the differing fields, before any model is loaded.

    Args:
        out_dir: the run folder (holds `train_fingerprint.json`).
        cfg: the run's config (any `BaseConfig` with a `resume` field).
        ckpt_dir: the Trainer's checkpoint folder (default `out_dir/checkpoints`).
    """
    out_dir = Path(out_dir)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else out_dir / CHECKPOINTS
    new = json.loads(json.dumps(fingerprint(cfg)))  # tuples -> lists, as stored
    if not getattr(cfg, "resume", True):
        if ckpt_dir.exists():
            log.info("resume false: removing the old checkpoints in %s", ckpt_dir)
            shutil.rmtree(ckpt_dir)
    elif _checkpoints(ckpt_dir):
        stored = out_dir / FINGERPRINT
        try:
            old = json.loads(stored.read_text()) if stored.is_file() else None
        except ValueError:  # cut off while being written by an older version: not trusted
            old = None
        diff = ["no fingerprint recorded"] if old is None else differing_fields(old, new)
        if diff:
            raise ResumeError(
                f"{ckpt_dir}: checkpoints of a run with another config ({'; '.join(diff)}); "
                "`-p resume false` starts over in this OUT_DIR (deleting them), or use a new "
                "OUT_DIR")
    write_text(out_dir / FINGERPRINT, json.dumps(new, indent=2) + "\n")
    return last_complete_checkpoint(ckpt_dir, remove_incomplete=True) if cfg.resume else None
