"""Safe resume of a training run: the same config and the same data, from a complete
checkpoint, or not at all.

A run folder stores a fingerprint in `train_fingerprint.json`: the config fields that shape
training (every field but the class's `NOT_TRAINING`, and no path: a folder moved with the same
content is the same run) and a digest of the content of what training reads (`data_dir`'s
train file, and every file of the fields a config class lists in `INPUT_FILES`).
`check_resume` compares it with the new run's: a different learning rate, LoRA rank or a
replaced train.csv stops the run with the differing fields (or files) named, instead of
silently resuming the old run on other data or failing to load its weights. The grid's skip
(`content_fingerprint`, which also covers the test file) and `predict`'s score cache use the
same digests. Checkpoints cut off while being written (a kill during save) are skipped.
Torch-free: the Trainer calls `trainer.train(resume_from_checkpoint=check_resume(out_dir, cfg))`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import zipfile
from pathlib import Path

from ..files.atomic import write_text
from ..configs import ConfigError
from ..data import find_file

log = logging.getLogger("lmsys_pref.resume")
FINGERPRINT = "train_fingerprint.json"
CHECKPOINTS = "checkpoints"
CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")
WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "adapter_model.bin")
TORCH_ZIPS = ("*.bin", "*.pt", "*.pth")  # torch.save writes zip archives, central dir last
INPUT = "input "  # fingerprint keys of content digests: "input train.csv"
PATH_FIELDS = ("data_dir", "out_dir", "model_dir")  # where things are, not what they hold
SAMPLE = 1 << 20  # a cheap digest of a large model file reads 16 pieces of this size
_digests: dict[tuple, str] = {}  # (path, size, mtime_ns, cheap) -> digest, for this process


class ResumeError(ConfigError):
    """The checkpoints in OUT_DIR were made with another config."""


def content_digest(path: str | Path, cheap: bool = False) -> str:
    """A digest of a file's bytes, or of a folder's file names and contents.

    With `cheap`, a file over 64 MiB is sampled (its size and 16 evenly spaced MiB), for
    model weights; data files are always read whole. Digests are cached per process by path,
    size and modification time.
    """
    path = Path(path)
    if path.is_dir():
        h = hashlib.blake2b(digest_size=16)
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{f.relative_to(path)}\0{content_digest(f, cheap)}\0".encode())
        return h.hexdigest()
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, cheap)
    if key not in _digests:
        h = hashlib.blake2b(str(st.st_size).encode(), digest_size=16)
        with path.open("rb") as f:
            if cheap and st.st_size > 64 * SAMPLE:
                for k in range(16):
                    f.seek(k * (st.st_size - SAMPLE) // 15)
                    h.update(f.read(SAMPLE))
            else:
                for block in iter(lambda: f.read(8 * SAMPLE), b""):
                    h.update(block)
        _digests[key] = h.hexdigest()
    return _digests[key]


def _paths(value) -> list[str]:
    """The paths of an input field: a list, or one string of space-separated paths."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v]
    return str(value or "").split()


def input_digests(cfg, test: bool = False) -> dict[str, str]:
    """Content digests of what a run reads, keyed `INPUT` + file name: `cfg.data_dir`'s train
    file (and its test file with `test`), and every file of the fields in
    `type(cfg).INPUT_FILES` (extra training data, teachers, ...)."""
    found = {}
    if cfg.data_dir:
        for stem in ("train", "test") if test else ("train",):
            path = find_file(cfg.data_dir, stem, required=False)
            if path is not None:
                found[f"{INPUT}{path.name}"] = content_digest(path)
    for name in type(cfg).INPUT_FILES:
        for k, path in enumerate(_paths(getattr(cfg, name))):
            exists = Path(path).exists()  # a missing file fails in its loader, by name
            found[f"{INPUT}{name}[{k}] {Path(path).name}"] = \
                content_digest(path) if exists else "absent"
    return found


def fingerprint(cfg) -> dict:
    """What shapes training, as a JSON-able mapping: the training fields (no paths) and the
    content digests of the training inputs (`input_digests`)."""
    skip = set(type(cfg).NOT_TRAINING) | set(PATH_FIELDS) | set(type(cfg).INPUT_FILES)
    fields = {k: v for k, v in cfg.to_dict().items() if k not in skip}
    return {**fields, **input_digests(cfg)}


def content_fingerprint(cfg) -> dict:
    """Every field but OUT_DIR and the paths, plus the digests of every input, the test file
    included: what a finished run must match to be reused (the grid's skip)."""
    skip = set(PATH_FIELDS) | set(type(cfg).INPUT_FILES)
    fields = {k: v for k, v in cfg.to_dict().items() if k not in skip}
    return json.loads(json.dumps({**fields, **input_digests(cfg, test=True)}))


def differing_fields(old: dict, new: dict) -> list[str]:
    """'field: old -> new' for every field whose value differs (or exists on one side only);
    an input file as 'train.csv: content changed' (or added, removed)."""
    out = []
    for k in sorted(set(old) | set(new)):
        if old.get(k) == new.get(k):
            continue
        if k.startswith(INPUT):
            what = "added" if k not in old else "removed" if k not in new else "content changed"
            out.append(f"{k[len(INPUT):]}: {what}")
        else:
            out.append(f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}")
    return out


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
    try:
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    except (AttributeError, KeyError, TypeError, IndexError):
        return "unreadable header (not a safetensors tensor table)"
    return None if size >= 8 + n + max(ends, default=0) else "tensor data cut off"


def json_problem(path: Path) -> str | None:
    """Why a JSON file is unusable (None when it parses); a file over 1 MiB (a tokenizer)
    is checked for a cut-off end only, which is what a killed copy leaves."""
    try:
        if path.stat().st_size <= SAMPLE:
            json.loads(path.read_text(encoding="utf-8"))
            return None
        with path.open("rb") as f:
            first = f.read(64).lstrip()[:1]
            f.seek(-64, 2)
            last = f.read().rstrip()[-1:]
    except (OSError, ValueError) as err:
        return f"not valid JSON ({err})"
    whole = (first, last) in ((b"{", b"}"), (b"[", b"]"))
    return None if whole else "not valid JSON (cut off: it does not end where it began)"


def model_files_problem(model_dir: str | Path) -> str | None:
    """'<file>: <what is wrong>' for the first cut-off or corrupt file of a saved model folder
    (its JSON configs, tokenizer and safetensors weights), None when all are whole. Checked
    before loading, so a truncated adapter is one line naming it, not a library traceback."""
    model_dir = Path(model_dir)
    for path in sorted(model_dir.glob("*.json")):
        problem = json_problem(path)
        if problem:
            return f"{path}: {problem}"
    for path in sorted(model_dir.glob("*.safetensors")):
        problem = _safetensors_problem(path)
        if problem:
            return f"{path}: {problem} (a truncated or corrupt weights file)"
    return None


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from (None when it is complete)."""
    if not (ckpt / "trainer_state.json").is_file():
        return "no trainer_state.json"
    for path in sorted(ckpt.glob("*.json")):
        if json_problem(path):
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
    if not cfg.resume:
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
                f"{ckpt_dir}: checkpoints of a run with another config or other data "
                f"({'; '.join(diff)}); "
                "`-p resume false` starts over in this OUT_DIR (deleting them), or use a new "
                "OUT_DIR")
    write_text(out_dir / FINGERPRINT, json.dumps(new, indent=2) + "\n")
    return last_complete_checkpoint(ckpt_dir, remove_incomplete=True) if cfg.resume else None
