"""A two-class run started from a three-class one (`-p init_from`), as the WSDM Cup's 2nd place
started from its 2024 models; and the LM path on a WSDM-shaped folder."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from lmsys_pref import data, runs
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.model import importer, models
from lmsys_pref.train import fit, loop

TINY = {"max_steps": 2, "max_train_rows": 60, "max_test_rows": 8, "dtype": "fp32"}


@pytest.fixture(scope="module")
def three_class_run(sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lmsys") / "run"
    fit.fit(LMConfig.from_preset("tiny-llama", data_dir=str(sample_dir), out_dir=str(out),
                                 **TINY))
    return out


def test_a_two_class_run_keeps_the_a_and_b_rows_of_the_head(three_class_run, wsdm_dir,
                                                           one_thread):
    cfg = LMConfig.from_preset("tiny-llama", data_dir=str(wsdm_dir), task="wsdm-2025",
                               init_from=str(three_class_run), **TINY)
    model, _ = models.build(cfg.model)
    assert model.base_model.model.score.weight.shape[0] == 2
    loaded = loop.warm_start(model, cfg)["init_from"]
    _, saved = importer.read_adapter(three_class_run / "model")
    head = saved["base_model.model.score.weight"]
    got = model.base_model.model.score.modules_to_save["default"].weight
    torch.testing.assert_close(got.detach(), head[:2].float())  # a, b kept; tie dropped
    lora = next(k for k in saved if ".lora_B." in k)
    state = dict(model.named_parameters())
    mine = next(v for k, v in state.items() if k.replace(".default", "") == lora)
    torch.testing.assert_close(mine.detach(), saved[lora].float())
    assert loaded["head_rows"] == 2


def test_the_lm_path_writes_id_winner_on_a_wsdm_folder(three_class_run, wsdm_dir, tmp_path,
                                                      one_thread):
    m = fit.fit(LMConfig.from_preset("tiny-llama", data_dir=str(wsdm_dir), out_dir=str(
        tmp_path / "w"), init_from=str(three_class_run), **TINY))
    assert m["task"] == "wsdm-2025" and m["init_from"]["head_rows"] == 2
    sub = pd.read_csv(tmp_path / "w" / "submission.csv", dtype=str)
    ids = pd.read_parquet(wsdm_dir / "test.parquet")["id"].astype(str).tolist()[:8]
    assert list(sub.columns) == ["id", "winner"] and sub["id"].tolist() == ids
    val = runs.read_probs(tmp_path / "w" / "val.csv")
    assert list(val.columns) == ["id", "label", "winner_model_a", "winner_model_b"]
    assert runs.read_model_meta(tmp_path / "w")["config"]["task"] == "wsdm-2025"


def test_only_a_run_of_the_same_base_and_one_model_can_start_a_run(three_class_run, wsdm_dir,
                                                                  tmp_path):
    other = LMConfig.from_preset("tiny-gemma2", data_dir=str(wsdm_dir), task="wsdm-2025",
                                 init_from=str(three_class_run))
    model, _ = models.build(other.model)
    with pytest.raises(data.DataError, match="a run starts only from one of its own base"):
        loop.warm_start(model, other)
    meta = runs.read_model_meta(three_class_run / "model")
    runs.write_model_meta(tmp_path, meta["kind"], meta["config"], folds=["fold_0"])
    cfg = LMConfig.from_preset("tiny-llama", task="wsdm-2025", init_from=str(tmp_path))
    with pytest.raises(data.DataError, match="k-fold run holds one model per fold"):
        loop.warm_start(models.build(cfg.model)[0], cfg)
