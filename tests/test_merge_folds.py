"""`merge-folds`: one model folder from a k-fold run. `exact` adds exactly the mean of the folds'
weight changes (checked through peft's own `merge_and_unload`), `mean` is the state-dict mean
of the 1st place; the folder scores as one model through `predict` and `bias`, loads with
plain peft, and `--into-base` writes a full model that plain transformers loads."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from lmsys_pref import cli, data, runs
from lmsys_pref.commands import predict
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.configs.predict import PredictConfig
from lmsys_pref.infer.predictor import FoldMean, LMPredictor
from lmsys_pref.model import loading, models
from lmsys_pref.train import fit, merge

K = 3
ADAPTER = "adapter_model.safetensors"


@pytest.fixture(scope="module")
def kfold_run(tmp_path_factory, one_thread):
    """A 3-fold tiny Llama run in fp32 (exact comparisons), trained enough that folds differ."""
    out = tmp_path_factory.mktemp("kfold")
    cfg = LMConfig.from_preset("tiny-llama", data_dir="tests/fixtures/quirks", out_dir=str(out),
                               lenient=True, max_steps=3, n_folds=K, dtype="fp32",
                               learning_rate=0.05)
    fit.fit(cfg)
    return out


@pytest.fixture(scope="module")
def rows(quirks_dir):
    return data.load_split(quirks_dir / "train.csv", lenient=True).iloc[:8]


def merged_weights(model_dir) -> dict[str, torch.Tensor]:
    """The base weights with the folder's adapter added in, by peft's merge_and_unload."""
    model, _, _ = loading.load_for_inference(model_dir, "cpu")
    return {k: v.clone() for k, v in model.merge_and_unload().state_dict().items()}


def test_exact_merge_adds_the_mean_of_the_folds_changes(kfold_run, tmp_path):
    out = merge.merge_folds(kfold_run, tmp_path / "exact", mode="exact")
    config = runs.load_json(out / "adapter_config.json")
    assert config["r"] == K * 4 and config["lora_alpha"] == K * 4
    meta = runs.read_model_meta(out)
    assert "folds" not in meta and meta["merged"]["mode"] == "exact"
    assert meta["config"]["lora_r"] == K * 4 and not (out / runs.HELD_OUT).exists()
    folds = [merged_weights(kfold_run / "model" / f"fold_{k}") for k in range(K)]
    merged = merged_weights(out)
    changed = 0
    for key, value in merged.items():
        mean = torch.stack([f[key] for f in folds]).mean(0)
        torch.testing.assert_close(value, mean, atol=1e-6, rtol=1e-5)
        changed += not torch.equal(folds[0][key], folds[1][key])
    assert changed >= 5  # the LoRA targets of both layers and the head differ between folds


def test_mean_merge_is_the_state_dict_mean_and_scores_as_one_model(kfold_run, tmp_path, rows,
                                                                   quirks_dir):
    out = merge.merge_folds(kfold_run, tmp_path / "mean")
    folds = [load_file(str(kfold_run / "model" / f"fold_{k}" / ADAPTER)) for k in range(K)]
    merged = load_file(str(out / ADAPTER))
    assert set(merged) == set(folds[0])
    for key, value in merged.items():
        torch.testing.assert_close(value, torch.stack([f[key] for f in folds]).mean(0))
    assert runs.load_json(out / "adapter_config.json")["r"] == 4
    assert (out / "postrules.json").exists() and (out / "tokenizer.json").exists()
    assert isinstance(predict.load_predictor(out), LMPredictor)
    assert isinstance(predict.load_predictor(kfold_run), FoldMean)
    summary = predict.predict(PredictConfig(model_dir=str(out), data_dir=str(quirks_dir),
                                            out_dir=str(tmp_path / "pred"), progress=False))
    sub = pd.read_csv(tmp_path / "pred" / "submission.csv")
    assert summary["rows"] == len(sub) and "folds" not in summary
    test = data.load_split(quirks_dir / "test.csv", lenient=True)
    one = LMPredictor(out, devices="cpu", progress=False).predict_proba(test)
    np.testing.assert_allclose(sub.iloc[:, 1:].to_numpy(), one, atol=1e-6)
    for k in range(K):  # a model of its own, not one of the folds
        fold = LMPredictor(kfold_run / "model" / f"fold_{k}", devices="cpu", progress=False)
        assert np.abs(fold.predict_proba(test) - one).max() > 1e-3


def test_merged_adapter_loads_with_plain_peft(kfold_run, tmp_path, rows):
    from peft import PeftModel

    out = merge.merge_folds(kfold_run, tmp_path / "exact", mode="exact")
    ours, tok, cfg = loading.load_for_inference(out, "cpu")
    base = models.load_base(cfg.model, tok)  # the run's random base: plain tools cannot build it
    plain = PeftModel.from_pretrained(base, str(out)).eval()
    from lmsys_pref.infer.batching import collate
    from lmsys_pref.model import prompt
    x, mask = collate(prompt.encode(rows, tok, cfg.prompt), tok.pad_token_id, "cpu")
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=x, attention_mask=mask).logits,
                                   ours(input_ids=x, attention_mask=mask).logits)


def test_into_base_writes_a_full_model(kfold_run, tmp_path, rows):
    from transformers import AutoModelForSequenceClassification

    adapter = merge.merge_folds(kfold_run, tmp_path / "exact", mode="exact")
    assert cli.main(["merge-folds", str(kfold_run), str(tmp_path / "full"), "--mode", "exact",
                     "--into-base", "--dtype", "fp32"]) == 0  # exact: the default is bf16
    full = tmp_path / "full"
    assert (full / "model.safetensors").exists() and not (full / ADAPTER).exists()
    assert runs.read_model_meta(full)["merged"]["into_base"]
    kw = dict(devices="cpu", progress=False)
    np.testing.assert_allclose(LMPredictor(full, **kw).predict_proba(rows),
                               LMPredictor(adapter, **kw).predict_proba(rows), atol=1e-5)
    plain = AutoModelForSequenceClassification.from_pretrained(str(full)).eval()
    _, tok, cfg = loading.load_for_inference(full, "cpu")
    from lmsys_pref.infer.batching import collate
    from lmsys_pref.model import prompt
    x, mask = collate(prompt.encode(rows, tok, cfg.prompt), tok.pad_token_id, "cpu")
    with torch.no_grad():
        logits = plain(input_ids=x, attention_mask=mask).logits
    np.testing.assert_allclose(torch.softmax(logits, -1).numpy(),
                               LMPredictor(full, **kw).predict_proba(rows, tta="none"), atol=1e-5)


def test_bias_accepts_the_merged_folder(kfold_run, tmp_path, quirks_dir):
    from lmsys_pref.configs.bias import BiasConfig
    from lmsys_pref.eval import bias

    out = merge.merge_folds(kfold_run, tmp_path / "mean")
    result = bias.run(BiasConfig(model_dir=str(out), data_dir=str(quirks_dir),
                                 out_dir=str(tmp_path / "bias"), max_rows=4, judge_bias_dir="",
                                 lenient=True))
    assert result["n_rows"] == 4 and result["rows"]["rows_used"] == "all"


def test_what_cannot_be_merged_is_named(kfold_run, tmp_path, capsys):
    merged = merge.merge_folds(kfold_run, tmp_path / "mean")
    with pytest.raises(ValueError, match="not a k-fold run"):
        merge.merge_folds(merged, tmp_path / "again")
    for bad in (kfold_run, kfold_run / "model" / "inside", kfold_run.parent):
        with pytest.raises(ValueError, match="OUT_DIR must lie outside"):
            merge.merge_folds(kfold_run, bad)
    assert (kfold_run / "model" / "fold_0" / ADAPTER).exists()
    assert cli.main(["merge-folds", str(merged), str(tmp_path / "x")]) == 1
    assert "not a k-fold run" in capsys.readouterr().err


def test_encoder_folds_are_averaged_weight_by_weight(tmp_path, quirks_dir, rows):
    from lmsys_pref.configs.encoder import EncoderConfig

    cfg = EncoderConfig.from_preset("tiny-roberta", data_dir=str(quirks_dir),
                                    out_dir=str(tmp_path / "run"), lenient=True, max_steps=1)
    fit.fit(cfg)
    out = merge.merge_folds(tmp_path / "run", tmp_path / "merged")
    folds = [load_file(str(tmp_path / "run" / "model" / f"fold_{k}" / models.FULL_WEIGHTS))
             for k in range(cfg.n_folds)]
    merged = load_file(str(out / models.FULL_WEIGHTS))
    key = next(k for k in merged if merged[k].is_floating_point() and
               not torch.equal(folds[0][k], folds[1][k]))
    torch.testing.assert_close(merged[key].float(),
                               torch.stack([f[key].float() for f in folds]).mean(0),
                               atol=1e-2, rtol=1e-2)
    assert LMPredictor(out, devices="cpu", progress=False).predict_proba(rows).shape == (8, 3)
