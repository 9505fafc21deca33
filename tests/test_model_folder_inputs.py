"""`import-model` and `merge-folds` take model folders as input: like every other command they
never write into their input, and a cut weights file ends in one line naming it (as `predict`
says it, `runs.resume.model_files_problem`), before any tensor is loaded or anything written."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lmsys_pref import cli, runs
from lmsys_pref.model import importer

CUT = Path(__file__).resolve().parent / "fixtures" / "bad_inputs" / "model_cut_adapter" / \
    "model" / importer.ADAPTER_WEIGHTS[0]  # the first bytes of a real adapter's weights
LORA = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"],
        "task_type": "SEQ_CLS"}


def adapter(folder: Path, weights: Path | None = None) -> Path:
    """A peft-style adapter folder: its config and `weights` (default: one whole tensor)."""
    folder.mkdir(parents=True)
    (folder / importer.ADAPTER_CONFIG).write_text(json.dumps(LORA))
    if weights is None:
        save_file({"base_model.model.score.weight": torch.zeros(3, 4)},
                  str(folder / importer.ADAPTER_WEIGHTS[0]))
    else:
        shutil.copy(weights, folder / importer.ADAPTER_WEIGHTS[0])
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("where, words", [
    ("adapter", "is the adapter folder"),
    ("adapter/model", "is inside the adapter folder"),
    (".", "contains the adapter folder"),
    ("head.safetensors", "is the head file"),
    ("heads", "contains the head file"),
])
def test_import_model_refuses_its_own_input_as_out_dir(where, words, tmp_path, capsys):
    src = adapter(tmp_path / "adapter")
    head = tmp_path / ("heads/head.safetensors" if where == "heads" else "head.safetensors")
    head.parent.mkdir(exist_ok=True)
    save_file({"score.weight": torch.zeros(3, 4)}, str(head))
    before = files_of(tmp_path)
    out = tmp_path / where
    argv = ["import-model", "--adapter", str(src), "--head", str(head), "--base", "not-loaded",
            str(out)]
    assert cli.main(argv) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"error: out_dir '{out}' {words}") and "\n" not in line, line
    assert files_of(tmp_path) == before  # nothing written, moved or replaced


def test_import_model_names_a_cut_adapter_before_loading(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(importer, "_meta_base", lambda base: pytest.fail("the base was built"))
    src = adapter(tmp_path / "adapter", weights=CUT)
    out = tmp_path / "imported"
    assert cli.main(["import-model", "--adapter", str(src), "--base", "b", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (f"error: {src / importer.ADAPTER_WEIGHTS[0]}: tensor data cut off "
                           "(a truncated or corrupt weights file)"), err
    assert not out.exists()


def test_import_model_names_a_cut_head_file(tmp_path):
    src = adapter(tmp_path / "adapter")
    with pytest.raises(importer.ImportModelError, match=f"{tmp_path / 'head.safetensors'}: not "
                       "a readable tensor file, cut off or corrupt"):
        importer.read_head(shutil.copy(CUT, tmp_path / "head.safetensors"))
    assert src.is_dir()


def kfold_folder(run: Path, cut_fold: int, folds: int = 2) -> Path:
    """A k-fold run's model/ (as `train.fit` writes it) whose fold `cut_fold` has cut weights."""
    model = run / "model"
    for k in range(folds):
        adapter(model / f"fold_{k}", weights=CUT if k == cut_fold else None)
        runs.write_model_meta(model / f"fold_{k}", "lm", {"model_id": "tiny"})
    runs.write_model_meta(model, "lm", {"model_id": "tiny"},
                          folds=[f"fold_{k}" for k in range(folds)])
    return model


@pytest.mark.parametrize("cut_fold", [0, 1])
def test_merge_folds_names_a_cut_fold_adapter_before_loading(cut_fold, tmp_path, capsys,
                                                              monkeypatch):
    monkeypatch.setattr(importer, "load_tensors", lambda path: pytest.fail(f"{path} loaded"))
    model = kfold_folder(tmp_path / "run", cut_fold)
    out = tmp_path / "merged"
    assert cli.main(["merge-folds", str(tmp_path / "run"), str(out)]) == 1
    err = capsys.readouterr().err
    cut = model / f"fold_{cut_fold}" / importer.ADAPTER_WEIGHTS[0]
    assert err.strip() == f"error: {cut}: tensor data cut off (a truncated or corrupt weights " \
                          "file)", err
    assert not out.exists()
