"""The training loop on CPU in bf16: loss goes down, 3-layer head + PiSSA, resume, k-fold,
evaluation of a holdout sample during training. Per-family goldens: test_half_precision.py."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from lmsys_pref import data, runs
from lmsys_pref.configs import ConfigError
from lmsys_pref.configs.encoder import EncoderConfig
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.data import metrics, splits
from lmsys_pref.model import heads, loading, models, prompt
from lmsys_pref.train import fit, loop, outputs

BF16_ATOL = 3e-3  # probabilities of a bf16 model scored in other batch shapes


def reload_logits(run_dir, df):
    """Logits of `df` from the model saved in `run_dir`, one padded batch, plus its config."""
    model, tok, cfg = loading.load_for_inference(run_dir, "cpu")
    ids = prompt.encode(df, tok, cfg.prompt)
    from lmsys_pref.infer.batching import collate
    x, mask = collate(ids, tok.pad_token_id, "cpu")
    with torch.no_grad():
        return model(input_ids=x, attention_mask=mask).logits, cfg


def test_loss_decreases_on_the_training_rows(tmp_path, quirks_dir):
    """Trained and scored on the same 16 rows: the fit must beat the untuned start."""
    cfg = LMConfig.from_preset("tiny-llama", out_dir=str(tmp_path), epochs=6,
                               untuned_baseline=True, learning_rate=0.01)
    df = data.load_split(quirks_dir / "train.csv", lenient=True).iloc[:16]
    model, tok = models.build(cfg.model)
    res = loop.train_one(cfg, model, tok, df, df, tmp_path)
    before = metrics.log_loss(df["label"], res.untuned_probs)
    after = metrics.log_loss(df["label"], res.val_probs)
    assert after < before - 0.05, (before, after)
    assert res.steps == 24


def test_llama_three_layer_head_swap_and_reload(tmp_path, quirks_dir):
    cfg = LMConfig.from_preset("tiny-llama", data_dir=str(quirks_dir), out_dir=str(tmp_path),
                               lenient=True, head_layers=3, swap_augment=True, max_steps=3,
                               lora_init="pissa_niter_2", tta="swap")
    m = fit.fit(cfg)
    assert m["steps"] == 3 and m["n_train"] == 40 and m["n_eval"] == 9  # prompt-grouped
    df = data.load_split(quirks_dir / "train.csv", lenient=True).iloc[:5]
    logits, cfg2 = reload_logits(tmp_path, df)
    assert cfg2.head_layers == 3 and cfg2.lora_init == "pissa_niter_2"
    model, tok, _ = loading.load_for_inference(tmp_path)
    again = loop.predict(model, tok, df, cfg2.replace(tta="none"))
    np.testing.assert_allclose(heads.to_probs(logits, "ce"), again, atol=BF16_ATOL)


def test_resume_from_last_checkpoint(tmp_path, quirks_dir, caplog):
    cfg = LMConfig.from_preset("tiny-llama", data_dir=str(quirks_dir), out_dir=str(tmp_path),
                               lenient=True, max_steps=2, save_steps=2)
    first = fit.fit(cfg)
    assert (tmp_path / "checkpoints" / "checkpoint-2").is_dir()
    caplog.set_level("INFO", logger="lmsys_pref.train.loop")
    m = fit.fit(cfg.replace(max_steps=4))  # picks up at step 2, runs 2 more
    assert any("resuming from" in r.getMessage() and "checkpoint-2" in r.getMessage()
               for r in caplog.records)
    hist = runs.load_json(tmp_path / outputs.HISTORY)
    steps = [h["step"] for h in hist if "loss" in h]
    assert m["steps"] == 4 and steps == [1, 2, 3, 4]  # the restored log continues
    assert [h["loss"] for h in hist if "loss" in h][:2] == pytest.approx(
        [first["train_loss_first"], first["train_loss_last"]])


def test_roberta_kfold_mse(tmp_path, quirks_dir):
    cfg = EncoderConfig.from_preset("tiny-roberta", data_dir=str(quirks_dir),
                                    out_dir=str(tmp_path), lenient=True, max_steps=2)
    m = fit.fit(cfg)
    oof = pd.read_csv(tmp_path / "oof.csv")
    assert len(oof) == 40 and oof["id"].is_unique and m["eval"] == "oof"
    assert m["log_loss"] == pytest.approx(
        metrics.log_loss(oof["label"], oof.iloc[:, 2:].to_numpy()))
    assert len(m["fold_log_losses"]) == 2 and m["best_fold"] == int(np.argmin(
        m["fold_log_losses"]))
    assert runs.read_model_meta(tmp_path)["kind"] == "encoder"
    for k in (0, 1):
        assert (tmp_path / "model" / f"fold_{k}" / models.FULL_WEIGHTS).exists()
    df = data.load_split(quirks_dir / "train.csv", lenient=True)
    k = m["best_fold"]
    _, va = splits.kfold(df["label"].to_numpy(), 2, cfg.seed,
                       groups=splits.fold_groups(df, cfg.group_by))[k]
    logits, _ = reload_logits(tmp_path / "model" / f"fold_{k}", df.iloc[va])
    np.testing.assert_allclose(heads.to_probs(logits, "mse"),
                               oof.iloc[va, 2:].to_numpy(), atol=BF16_ATOL)


def test_kfold_lm_run_and_predict_is_the_mean_of_its_folds(tmp_path, quirks_dir):
    from lmsys_pref.commands import predict
    from lmsys_pref.infer.predictor import LMPredictor

    cfg = LMConfig.from_preset("tiny-llama", data_dir=str(quirks_dir), out_dir=str(tmp_path),
                               lenient=True, max_steps=2, n_folds=3, tta="swap")
    m = fit.fit(cfg)
    oof = pd.read_csv(tmp_path / "oof.csv", dtype={"id": str})  # ids are text end to end
    train_ids = data.load_split(quirks_dir / "train.csv", lenient=True)["id"]
    assert sorted(oof["id"]) == sorted(train_ids) and not oof.isna().any().any()
    assert m["eval"] == "oof" and m["n_folds"] == 3 and len(m["fold_log_losses"]) == 3
    assert m["steps"] == 6 and m["train_loss_first"] is not None
    assert sorted(p.name for p in (tmp_path / "model").glob("fold_*")) == [
        "fold_0", "fold_1", "fold_2"]
    test = data.load_split(quirks_dir / "test.csv", lenient=True)
    folds = [LMPredictor(tmp_path / "model" / f"fold_{k}", devices="cpu", progress=False)
             .predict_proba(test, tta="swap") for k in range(3)]
    mean = predict.load_predictor(tmp_path, devices="cpu", progress=False).predict_proba(
        test, tta="swap")
    np.testing.assert_allclose(mean, np.mean(folds, axis=0), atol=1e-9)
    assert not np.allclose(folds[0], folds[1])  # the folds really differ
    sub = pd.read_csv(tmp_path / "submission.csv")
    np.testing.assert_allclose(sub.iloc[:, 1:].to_numpy(), mean, atol=BF16_ATOL)
    # each training row through the one fold model that never saw it: oof.csv again
    rows = data.load_split(quirks_dir / "train.csv", lenient=True).set_index("id").loc[
        oof["id"]].reset_index()
    held = predict.load_predictor(tmp_path, out_of_fold=True, devices="cpu", progress=False)
    assert all(isinstance(p, runs.Predictor) for p in (held, LMPredictor(
        tmp_path / "model" / "fold_0", devices="cpu", progress=False), predict.load_predictor(
        tmp_path, devices="cpu", progress=False)))  # OutOfFold, one fold, FoldMean
    np.testing.assert_allclose(held.predict_proba(rows, tta="swap"), oof.iloc[:, 2:].to_numpy(),
                               atol=BF16_ATOL)


def test_bias_on_a_kfold_lm_run_probes_rows_no_fold_model_saw(tmp_path, quirks_dir):
    from lmsys_pref.configs.bias import BiasConfig
    from lmsys_pref.eval import bias

    cfg = LMConfig.from_preset("tiny-llama", data_dir=str(quirks_dir), out_dir=str(tmp_path),
                               lenient=True, max_steps=1, n_folds=2)
    fit.fit(cfg)
    result = bias.run(BiasConfig(model_dir=str(tmp_path), data_dir=str(quirks_dir),
                                 out_dir=str(tmp_path / "bias"), max_rows=6, judge_bias_dir="",
                                 lenient=True))
    assert result["rows"]["rows_used"] == "held_out" and result["n_rows"] == 6
    assert "fold model" in result["rows"]["note"]


def test_fold_select_best_uses_the_best_fold_only(tmp_path, quirks_dir):
    from lmsys_pref.commands import predict

    cfg = EncoderConfig.from_preset("tiny-roberta", data_dir=str(quirks_dir),
                                    out_dir=str(tmp_path), lenient=True, max_steps=2,
                                    fold_select="best")
    m = fit.fit(cfg)
    assert runs.read_model_meta(tmp_path)["folds"] == [f"fold_{m['best_fold']}"]
    test = data.load_split(quirks_dir / "test.csv", lenient=True)
    got = predict.load_predictor(tmp_path, devices="cpu", progress=False).predict_proba(test)
    sub = pd.read_csv(tmp_path / "submission.csv")
    np.testing.assert_allclose(sub.iloc[:, 1:].to_numpy(), got, atol=BF16_ATOL)


def test_evaluation_during_training_scores_a_fixed_sample_then_the_whole_holdout(tmp_path,
                                                                                quirks_dir):
    cfg = LMConfig.from_preset("tiny-llama", out_dir=str(tmp_path), max_steps=4, eval_steps=2,
                               eval_rows=5)
    df = data.load_split(quirks_dir / "train.csv", lenient=True)
    model, tok = models.build(cfg.model)
    res = loop.train_one(cfg, model, tok, df.iloc[:16], df.iloc[16:28], tmp_path)
    evals = [(h["step"], h["eval_rows"]) for h in res.history if "eval_log_loss" in h]
    assert evals == [(2, 5), (4, 5), (4, 12)]  # every 2 steps on 5 rows, then all 12 once
    assert loop.eval_sample(df.iloc[16:28], cfg)["id"].tolist() == \
        loop.eval_sample(df.iloc[16:28], cfg)["id"].tolist()  # the same rows every time


def test_rerun_with_another_config_stops_before_loading(tmp_path, quirks_dir):
    from lmsys_pref.runs import resume

    cfg = LMConfig.from_preset("tiny-llama", data_dir=str(quirks_dir), out_dir=str(tmp_path),
                               lenient=True, max_steps=2, save_steps=2)
    fit.fit(cfg)
    for changed in (dict(learning_rate=1e-4), dict(lora_r=8)):
        with pytest.raises(resume.ResumeError, match=next(iter(changed))):
            fit.fit(cfg.replace(**changed))
        assert not (tmp_path / "submission.csv").exists()  # the old one is not left as current
    m = fit.fit(cfg.replace(learning_rate=1e-4, resume=False))  # starting over is explicit
    assert m["steps"] == 2 and (tmp_path / "submission.csv").exists()


def test_a_checkpoint_cut_off_while_saving_is_skipped(tmp_path, quirks_dir, caplog):
    cfg = LMConfig.from_preset("tiny-llama", data_dir=str(quirks_dir), out_dir=str(tmp_path),
                               lenient=True, max_steps=2, save_steps=2)
    fit.fit(cfg)
    cut = tmp_path / "checkpoints" / "checkpoint-3"  # a later save killed half-way
    cut.mkdir()
    (cut / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00")
    caplog.set_level("INFO", logger="lmsys_pref")
    m = fit.fit(cfg.replace(max_steps=4))
    assert m["steps"] == 4
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "checkpoint-3" in messages and "resuming from" in messages and "checkpoint-2" in messages


def test_every_preset_checkpoints_mid_run():
    """At the data size each preset is meant for, at least one checkpoint before the end."""
    from lmsys_pref.configs import load_preset, preset_names

    rows = {"tiny": 40, "gemma3-270m": 1500, "smollm2-135m": 1500, "minilm": 1500}
    for name in preset_names():
        p = load_preset(name)
        if p.get("kind") not in ("lm", "encoder"):
            continue
        n = next((v for k, v in rows.items() if name.startswith(k)), 57477)
        folds = p.get("n_folds", 0)
        train_rows = n * (1 - 1 / folds) if folds > 1 else n * 0.8
        per_step = p.get("batch_size", 4) * p.get("grad_accum", 4)
        steps = int(train_rows // per_step * p.get("epochs", 1))
        assert p["save_steps"] < steps, (name, p["save_steps"], steps)


def test_keep_best_ends_on_the_best_checkpoint_chosen_on_training_rows(tmp_path, quirks_dir,
                                                                      monkeypatch):
    """keep_best: the Trainer's own evaluation on rows held out of the fit (never the holdout
    that metrics.json scores) picks the checkpoint the run ends on."""
    from lmsys_pref.train import best

    monkeypatch.setattr(best, "MIN_STOP_ROWS", 1)  # the quirks folder is small
    monkeypatch.setattr(best, "uniform_loss", lambda trainer, model: math.inf)
    seen = []
    split = best.split_stop_rows
    monkeypatch.setattr(best, "split_stop_rows", lambda df, cfg: seen.append(split(df, cfg))
                        or seen[-1])
    cfg = LMConfig.from_preset("tiny-llama", data_dir=str(quirks_dir), out_dir=str(tmp_path),
                               lenient=True, max_steps=6, eval_steps=2, keep_best=True,
                               learning_rate=0.05)
    m = fit.fit(cfg)
    hist = runs.load_json(tmp_path / outputs.HISTORY)
    evals = {h["step"]: h["eval_loss"] for h in hist if "eval_loss" in h}
    assert sorted(evals) == [2, 4, 6]
    start, = [h["start_eval_loss"] for h in hist if "start_eval_loss" in h]
    evals[0] = start  # the untrained start is a candidate too
    assert m["best_step"] == min(evals, key=evals.get)
    (fit_rows, stop_rows), = seen
    val = set(runs.read_probs(tmp_path / "val.csv")["id"])
    assert not val & set(stop_rows["id"]) and not set(fit_rows["id"]) & set(stop_rows["id"])
    with pytest.raises(ConfigError, match="'keep_best' needs 'eval_steps'"):
        cfg.replace(eval_steps=0)


def test_keep_best_ends_at_the_start_when_no_checkpoint_beats_it(tmp_path, quirks_dir, caplog,
                                                                monkeypatch):
    """A run that only gets worse (a learning rate far too high) ends on its untrained start:
    the holdout scores exactly as the untuned model did, and the log says why. (The uniform
    candidate is made to lose: the start must be chosen on its own merit.)"""
    from lmsys_pref.train import best

    monkeypatch.setattr(best, "MIN_STOP_ROWS", 1)
    monkeypatch.setattr(best, "uniform_loss", lambda trainer, model: math.inf)
    cfg = LMConfig.from_preset("tiny-llama", data_dir=str(quirks_dir), out_dir=str(tmp_path),
                               lenient=True, max_steps=4, eval_steps=2, keep_best=True,
                               learning_rate=50.0, untuned_baseline=True)
    with caplog.at_level("WARNING", logger="lmsys_pref.train.best"):
        m = fit.fit(cfg)
    hist = runs.load_json(tmp_path / outputs.HISTORY)
    evals = [h["eval_loss"] for h in hist if "eval_loss" in h]
    start, = [h["start_eval_loss"] for h in hist if "start_eval_loss" in h]
    assert min(evals) > start and m["best_step"] == 0 and m["ends_at"] == "start"
    assert m["log_loss"] == pytest.approx(m["untuned_log_loss"], abs=1e-6)
    assert "the run ends at its start" in caplog.text


def test_keep_best_ends_uniform_when_nothing_beats_it(tmp_path, quirks_dir, caplog,
                                                      monkeypatch):
    """A start far from uniform (a large random head) and checkpoints that only get worse: the
    run ends with its output layer zeroed, so the holdout scores exactly ln 3, never worse
    than no model; the saved model predicts the same when read back."""
    from lmsys_pref.train import best

    monkeypatch.setattr(best, "MIN_STOP_ROWS", 1)
    monkeypatch.setattr(heads, "HEAD_INIT_GAIN", 30.0)  # a start well above ln 3
    cfg = LMConfig.from_preset("tiny-llama", data_dir=str(quirks_dir), out_dir=str(tmp_path),
                               lenient=True, max_steps=4, eval_steps=2, keep_best=True,
                               learning_rate=50.0, untuned_baseline=True)
    with caplog.at_level("WARNING", logger="lmsys_pref.train.best"):
        m = fit.fit(cfg)
    entry, = [h for h in runs.load_json(tmp_path / outputs.HISTORY) if "ends_at" in h]
    assert entry["start_eval_loss"] > entry["uniform_eval_loss"] == pytest.approx(math.log(3))
    assert m["ends_at"] == "uniform" and m["untuned_log_loss"] > math.log(3) + 0.01
    assert m["log_loss"] == pytest.approx(math.log(3), abs=1e-6)
    sub = runs.read_probs(tmp_path / "submission.csv")[list(data.LABEL_COLS)].to_numpy()
    np.testing.assert_allclose(sub, 1 / 3, atol=1e-6)
    assert "ends predicting 1 / 3" in caplog.text


def test_keep_best_with_too_few_rows_to_choose_fits_them_all(tmp_path, quirks_dir, caplog):
    """Below `best.MIN_STOP_ROWS` choosing rows the run is the run without keep_best: the same
    holdout probabilities, no checkpoint evaluation, and a warning naming the counts."""
    from lmsys_pref.train import best

    kw = dict(data_dir=str(quirks_dir), lenient=True, max_steps=4, eval_steps=2)
    with caplog.at_level("WARNING", logger="lmsys_pref.train.best"):
        fit.fit(LMConfig.from_preset("tiny-llama", out_dir=str(tmp_path / "kb"), keep_best=True,
                                     **kw))
    fit.fit(LMConfig.from_preset("tiny-llama", out_dir=str(tmp_path / "plain"), **kw))
    kept, plain = (runs.read_probs(tmp_path / name / "val.csv") for name in ("kb", "plain"))
    pd.testing.assert_frame_equal(kept, plain)
    hist = runs.load_json(tmp_path / "kb" / outputs.HISTORY)
    assert not any("best_step" in h or "start_eval_loss" in h for h in hist)
    assert f"({best.MIN_STOP_ROWS} needed" in caplog.text
