"""Safe resume: a changed config stops with the fields named; cut-off checkpoints are skipped."""
import json
import logging
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save_file

from lmsys_pref import resume
from lmsys_pref.configs.lm import LMConfig


def checkpoint(ckpt_dir, step, *, state=True, weights="ok"):
    """A Trainer-like checkpoint folder: trainer_state.json, adapter weights, optimizer.pt."""
    path = ckpt_dir / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if state:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    save_file({"w": np.ones((64, 64), np.float32)}, str(path / "adapter_model.safetensors"))
    if weights == "cut":  # killed while writing: the tensor data stops half-way
        data = (path / "adapter_model.safetensors").read_bytes()
        (path / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    if weights == "header":
        (path / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with zipfile.ZipFile(path / "optimizer.pt", "w") as z:
        z.writestr("data.pkl", b"x" * 100)
    if weights == "zip":
        data = (path / "optimizer.pt").read_bytes()
        (path / "optimizer.pt").write_bytes(data[:40])
    return path


def test_last_complete_checkpoint_skips_cut_ones(tmp_path, caplog):
    ckpts = tmp_path / "checkpoints"
    good = checkpoint(ckpts, 10)
    checkpoint(ckpts, 20, state=False)
    checkpoint(ckpts, 30, weights="cut")
    checkpoint(ckpts, 40, weights="header")
    checkpoint(ckpts, 50, weights="zip")
    with caplog.at_level(logging.WARNING, "lmsys_pref.resume"):
        assert resume.last_complete_checkpoint(ckpts) == str(good)
    for step, why in [(20, "no trainer_state.json"),
                      (30, "adapter_model.safetensors: tensor data cut off"),
                      (40, "adapter_model.safetensors: header cut off"),
                      (50, "optimizer.pt is cut off")]:
        assert f"checkpoint-{step} ({why}" in caplog.text
    assert len(list(ckpts.iterdir())) == 5  # pure unless asked to remove
    assert resume.last_complete_checkpoint(tmp_path / "absent") is None


def test_newest_complete_checkpoint_wins(tmp_path):
    ckpts = tmp_path / "checkpoints"
    checkpoint(ckpts, 9)
    newest = checkpoint(ckpts, 100)  # numeric order, not text order
    assert resume.last_complete_checkpoint(ckpts) == str(newest)


def cfg(**kw):
    return LMConfig.from_preset("tiny-llama", **kw)


def test_check_resume_same_config_resumes_and_removes_cut_checkpoints(tmp_path):
    assert resume.check_resume(tmp_path, cfg()) is None  # fresh run: fingerprint recorded
    stored = json.loads((tmp_path / resume.FINGERPRINT).read_text())
    assert stored["learning_rate"] == cfg().learning_rate and "devices" not in stored
    good = checkpoint(tmp_path / "checkpoints", 10)
    cut = checkpoint(tmp_path / "checkpoints", 20, weights="cut")
    # fields that do not shape training may change on resume
    assert resume.check_resume(tmp_path, cfg(devices="cpu,cpu", tta="swap",
                                             save_steps=7)) == str(good)
    assert not cut.exists()


def test_check_resume_with_another_config_names_the_fields(tmp_path):
    resume.check_resume(tmp_path, cfg())
    checkpoint(tmp_path / "checkpoints", 10)
    with pytest.raises(resume.ResumeError) as err:
        resume.check_resume(tmp_path, cfg(learning_rate=1e-3, lora_r=8))
    msg = str(err.value)
    assert "learning_rate: 0.005 -> 0.001" in msg and "lora_r: 4 -> 8" in msg
    assert "-p resume false" in msg and "new OUT_DIR" in msg
    assert "devices" not in msg
    assert (tmp_path / "checkpoints" / "checkpoint-10").exists()  # nothing deleted


def test_checkpoints_without_fingerprint_are_not_trusted(tmp_path):
    checkpoint(tmp_path / "checkpoints", 10)
    with pytest.raises(resume.ResumeError, match="no fingerprint recorded"):
        resume.check_resume(tmp_path, cfg())


def test_resume_false_clears_old_checkpoints(tmp_path):
    resume.check_resume(tmp_path, cfg())
    checkpoint(tmp_path / "checkpoints", 10)
    assert resume.check_resume(tmp_path, cfg(lora_r=8, resume=False)) is None
    assert not (tmp_path / "checkpoints").exists()
    assert json.loads((tmp_path / resume.FINGERPRINT).read_text())["lora_r"] == 8
    checkpoint(tmp_path / "checkpoints", 5)  # the new run's checkpoints resume next time
    assert resume.check_resume(tmp_path, cfg(lora_r=8)).endswith("checkpoint-5")
