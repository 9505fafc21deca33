"""Safe resume: a changed config stops with the fields named; cut-off checkpoints are skipped."""
import json
import logging
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save_file

from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.runs import resume


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


def data_folder(path, train_text: str):
    path.mkdir(parents=True, exist_ok=True)
    (path / "train.csv").write_text(train_text)
    return path


def test_a_replaced_train_file_stops_resume_naming_it(tmp_path):
    """Issue 20: the fingerprint held the data_dir path, so a new train.csv resumed the old
    run (0 new steps, the old adapter, metrics "on" the new data)."""
    data = data_folder(tmp_path / "data", "id,x\n1,a\n")
    run = tmp_path / "run"
    resume.check_resume(run, cfg(data_dir=str(data)))
    checkpoint(run / "checkpoints", 24)
    (data / "train.csv").write_text("id,x\n1,b\n")  # same path, same command, new rows
    with pytest.raises(resume.ResumeError) as err:
        resume.check_resume(run, cfg(data_dir=str(data)))
    assert "train.csv: content changed" in str(err.value) and "other data" in str(err.value)
    assert "data_dir" not in str(err.value)


def test_the_same_content_elsewhere_resumes(tmp_path):
    a = data_folder(tmp_path / "a", "id,x\n1,a\n")
    b = data_folder(tmp_path / "b", "id,x\n1,a\n")
    run = tmp_path / "run"
    resume.check_resume(run, cfg(data_dir=str(a)))
    good = checkpoint(run / "checkpoints", 24)
    assert resume.check_resume(run, cfg(data_dir=str(b))) == str(good)
    stored = json.loads((run / resume.FINGERPRINT).read_text())
    assert "data_dir" not in stored and stored["input train.csv"] == resume.content_digest(
        b / "train.csv")


def test_input_file_fields_are_fingerprinted_by_content(tmp_path):
    import dataclasses

    @dataclasses.dataclass
    class WithExtra(LMConfig):
        INPUT_FILES = ("extra_inputs",)
        extra_inputs: str = ""
        """Extra files, separated by spaces."""

    extra = tmp_path / "extra.csv"
    extra.write_text("v1")
    one = WithExtra.from_preset("tiny-llama", extra_inputs=str(extra))
    resume.check_resume(tmp_path / "run", one)
    checkpoint(tmp_path / "run" / "checkpoints", 3)
    extra.write_text("v2")
    with pytest.raises(resume.ResumeError, match=r"extra_inputs\[0\] extra.csv: content changed"):
        resume.check_resume(tmp_path / "run", one)
    real = resume.fingerprint(LMConfig.from_preset("tiny-llama", extra_train=str(extra)))
    assert real["input extra_train[0] extra.csv"] == resume.content_digest(extra)
    grid_view = resume.content_fingerprint(one)  # the grid's: test file and every field too
    assert "input test.csv" in grid_view and "extra_inputs" not in grid_view
    assert "out_dir" not in grid_view and grid_view["learning_rate"] == one.learning_rate


def test_content_digest_of_files_and_folders(tmp_path):
    big = tmp_path / "m" / "weights.bin"
    big.parent.mkdir()
    big.write_bytes(b"\0" * (70 << 20))
    whole, cheap = resume.content_digest(big), resume.content_digest(big, cheap=True)
    folder = resume.content_digest(big.parent, cheap=True)
    with big.open("r+b") as f:  # one byte inside the first sampled MiB
        f.seek(10)
        f.write(b"\1")
    assert resume.content_digest(big) != whole and resume.content_digest(big, True) != cheap
    assert resume.content_digest(big.parent, cheap=True) != folder


def test_model_files_problem_names_the_cut_file(tmp_path):
    save_file({"w": np.ones((64, 64), np.float32)}, str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / "adapter_config.json").write_text('{"r": 4}')
    (tmp_path / "tokenizer.json").write_text('{"v": "' + "x" * (2 << 20) + '"}')
    assert resume.model_files_problem(tmp_path) is None
    (tmp_path / "tokenizer.json").write_text('{"v": "' + "x" * (2 << 20))  # cut, over 1 MiB
    assert resume.model_files_problem(tmp_path).startswith(f"{tmp_path / 'tokenizer.json'}: "
                                                           "not valid JSON (cut off")
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "adapter_config.json").write_text('{"r": ')
    assert "adapter_config.json: not valid JSON" in resume.model_files_problem(tmp_path)
    (tmp_path / "adapter_config.json").write_text('{"r": 4}')
    data = (tmp_path / "adapter_model.safetensors").read_bytes()
    (tmp_path / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    assert resume.model_files_problem(tmp_path) == (
        f"{tmp_path / 'adapter_model.safetensors'}: tensor data cut off (a truncated or corrupt "
        "weights file)")
