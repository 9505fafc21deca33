"""The training loop on CPU in bf16: loss goes down, 3-layer head + PiSSA, resume, k-fold,
evaluation of a holdout sample during training. Per-family goldens: test_half_precision.py."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import torch

from lmsys_pref import data, metrics, runs
from lmsys_pref.lm import fit, heads, models, prompt, train
from lmsys_pref.configs.encoder import EncoderConfig
from lmsys_pref.configs.lm import LMConfig

BF16_ATOL = 3e-3  # probabilities of a bf16 model scored in other batch shapes


def reload_logits(run_dir, df):
    """Logits of `df` from the model saved in `run_dir`, one padded batch, plus its config."""
    model, tok, cfg = models.load_for_inference(run_dir, "cpu")
    ids = prompt.encode(df, tok, cfg)
    from lmsys_pref.infer.batching import collate
    x, mask = collate(ids, tok.pad_token_id, "cpu")
    with torch.no_grad():
        return model(input_ids=x, attention_mask=mask).logits, cfg


def test_loss_decreases_on_the_training_rows(tmp_path, quirks_dir):
    """Trained and scored on the same 16 rows: the fit must beat the untuned start."""
    cfg = LMConfig.from_preset("tiny-llama", out_dir=str(tmp_path), epochs=6,
                               untuned_baseline=True, learning_rate=0.01)
    df = data.load_split(quirks_dir / "train.csv", lenient=True).iloc[:16]
    model, tok = models.build(cfg)
    res = train.train_one(cfg, model, tok, df, df, tmp_path)
    before = metrics.log_loss(df["label"], res["untuned_probs"])
    after = metrics.log_loss(df["label"], res["val_probs"])
    assert after < before - 0.05, (before, after)
    assert res["steps"] == 24


def test_llama_three_layer_head_swap_and_reload(tmp_path, quirks_dir):
    cfg = LMConfig.from_preset("tiny-llama", data_dir=str(quirks_dir), out_dir=str(tmp_path),
                               lenient=True, head_layers=3, swap_augment=True, max_steps=3,
                               lora_init="pissa_niter_2", tta="swap")
    m = fit.fit(cfg)
    assert m["steps"] == 3 and m["n_train"] == 32
    df = data.load_split(quirks_dir / "train.csv", lenient=True).iloc[:5]
    logits, cfg2 = reload_logits(tmp_path, df)
    assert cfg2.head_layers == 3 and cfg2.lora_init == "pissa_niter_2"
    model, tok, _ = models.load_for_inference(tmp_path)
    again = train.predict(model, tok, df, cfg2.replace(tta="none"))
    np.testing.assert_allclose(heads.to_probs(logits, "ce"), again, atol=BF16_ATOL)


def test_resume_from_last_checkpoint(tmp_path, quirks_dir, caplog):
    cfg = LMConfig.from_preset("tiny-llama", data_dir=str(quirks_dir), out_dir=str(tmp_path),
                               lenient=True, max_steps=2, save_steps=2)
    first = fit.fit(cfg)
    assert (tmp_path / "checkpoints" / "checkpoint-2").is_dir()
    caplog.set_level("INFO", logger="lmsys_pref.lm.train")
    m = fit.fit(cfg.replace(max_steps=4))  # picks up at step 2, runs 2 more
    assert any("resuming from" in r.getMessage() and "checkpoint-2" in r.getMessage()
               for r in caplog.records)
    hist = runs.load_json(tmp_path / fit.HISTORY)
    steps = [h["step"] for h in hist if "loss" in h]
    assert m["steps"] == 4 and steps == [1, 2, 3, 4]  # the restored log continues
    assert [h["loss"] for h in hist if "loss" in h][:2] == pytest.approx(
        [first["train_loss_first"], first["train_loss_last"]])


def test_roberta_kfold_mse(tmp_path, quirks_dir):
    cfg = EncoderConfig.from_preset("tiny-roberta", data_dir=str(quirks_dir),
                                    out_dir=str(tmp_path), lenient=True, max_steps=2)
    m = fit.fit(cfg)
    oof = pd.read_csv(tmp_path / "oof.csv")
    assert len(oof) == 40 and oof["id"].is_unique
    assert m["cv_log_loss"] == pytest.approx(
        metrics.log_loss(oof["label"], oof.iloc[:, 2:].to_numpy()))
    assert len(m["fold_log_losses"]) == 2 and m["best_fold"] in (0, 1)
    assert runs.read_model_meta(tmp_path)["kind"] == "encoder"
    assert (tmp_path / "model" / models.FULL_WEIGHTS).exists()
    df = data.load_split(quirks_dir / "train.csv", lenient=True)
    _, va = data.kfold(df["label"].to_numpy(), 2, cfg.seed)[m["best_fold"]]
    logits, _ = reload_logits(tmp_path, df.iloc[va])
    np.testing.assert_allclose(heads.to_probs(logits, "mse"),
                               oof.iloc[va, 2:].to_numpy(), atol=BF16_ATOL)


def test_evaluation_during_training_scores_a_fixed_sample_then_the_whole_holdout(tmp_path,
                                                                                quirks_dir):
    cfg = LMConfig.from_preset("tiny-llama", out_dir=str(tmp_path), max_steps=4, eval_steps=2,
                               eval_rows=5)
    df = data.load_split(quirks_dir / "train.csv", lenient=True)
    model, tok = models.build(cfg)
    res = train.train_one(cfg, model, tok, df.iloc[:16], df.iloc[16:28], tmp_path)
    evals = [(h["step"], h["eval_rows"]) for h in res["history"] if "eval_log_loss" in h]
    assert evals == [(2, 5), (4, 5), (4, 12)]  # every 2 steps on 5 rows, then all 12 once
    assert train.eval_sample(df.iloc[16:28], cfg)["id"].tolist() == \
        train.eval_sample(df.iloc[16:28], cfg)["id"].tolist()  # the same rows every time
