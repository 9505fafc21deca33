"""Distillation (lmsys_pref.train.distill): the loss, teacher rows under swap, pair batches, a
planted teacher a student learns from, and the 1st place's recipe at tiny scale."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from synthetic_rows import planted_rows, soften, teacher_file, true_labels, write_dir

from lmsys_pref import cli, data, runs, xgb
from lmsys_pref.commands import grid
from lmsys_pref.configs.encoder import EncoderConfig
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.configs.xgb import XGBConfig
from lmsys_pref.data import labels, teachers
from lmsys_pref.train import distill, fit, loop
from lmsys_pref.xgb import levers

COLS = list(data.LABEL_COLS)


def test_without_teachers_the_loss_is_the_models_own():
    torch.manual_seed(0)
    logits, y = torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    target = torch.eye(3)[y]
    assert distill.loss(logits, target, None) == pytest.approx(F.cross_entropy(logits, y).item())
    assert distill.loss(logits, target, None, objective="mse") == pytest.approx(
        F.mse_loss(logits, target).item())


def test_teacher_terms_kl_and_cosine_at_the_temperature():
    torch.manual_seed(1)
    logits, target = torch.randn(4, 3), torch.softmax(torch.randn(4, 3), -1)
    q = torch.softmax(torch.randn(4, 1, 3), -1)
    t = 2.0
    p_t, q_t = torch.softmax(logits / t, -1), torch.softmax(torch.log(q[:, 0]) / t, -1)
    kl = (q_t * (q_t.log() - p_t.log())).sum(1).mean() * t * t
    cos = (1 - F.cosine_similarity(p_t, q_t, dim=-1)).mean()
    want = (F.cross_entropy(logits, target) + kl + cos) / 3
    got = distill.loss(logits, target, q, temperature=t, weights=teachers.loss_weights([], 1))
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    same = torch.softmax(logits, -1)[:, None]  # a teacher the student already matches
    assert distill.loss(logits, target, same, weights=[0.5, 0.25, 0.25]).item() == \
        pytest.approx(0.5 * F.cross_entropy(logits, target).item(), abs=1e-6)


def test_mse_student_distils_through_its_clipped_probabilities():
    logits = torch.tensor([[0.6, 0.3, 0.1]], requires_grad=True)
    q = torch.tensor([[[0.1, 0.3, 0.6]]])
    value = distill.loss(logits, torch.eye(3)[[0]], q, objective="mse", weights=[0, 1, 1])
    value.backward()
    assert value.item() > 0 and logits.grad.abs().sum() > 0


def frame_with_teacher(tmp_path, n=4):
    """Planted rows (the last one a tie) with one teacher's probabilities attached."""
    planted_rows(n).to_csv(tmp_path / "rows.csv", index=False)
    df = data.load_split(tmp_path / "rows.csv")
    df.loc[n - 1, COLS], df.loc[n - 1, "label"] = [0, 0, 1], 2
    probs = np.tile([0.7, 0.2, 0.1], (n, 1))
    return df.assign(**dict(zip(teachers.columns(0), probs.T))), probs


@pytest.mark.parametrize("mode", [True, "pair"])
def test_teacher_rows_and_soft_labels_swap_with_their_row(tmp_path, mode):
    df, probs = frame_with_teacher(tmp_path)
    cfg = LMConfig(soft_labels=True, teachers=["t.csv"], swap_augment=mode)
    rows, target, fields = distill.training_rows(df, cfg.distill)
    n = len(df)
    teach = fields[distill.TEACHER_KEY]
    assert len(rows) == 2 * n and rows["swapped"].tolist() == [False] * n + [True] * n
    np.testing.assert_allclose(teach[n:, 0], np.tile([0.2, 0.7, 0.1], (n, 1)))  # A<->B
    np.testing.assert_allclose(target[n:], target[:n][:, [1, 0, 2]])
    assert target[2 * n - 1].tolist() == [0, 0, 1]  # a tie stays a tie


def test_pair_swap_puts_each_row_and_its_twin_in_one_batch(tmp_path):
    from lmsys_pref.model import models

    df, _ = frame_with_teacher(tmp_path)
    cfg = LMConfig(teachers=["t.csv"], swap_augment="pair")
    rows, target, fields = distill.training_rows(df, cfg.distill)
    ids = [[5, 6, 7 + i] for i in range(len(rows))]
    ds = distill.dataset(loop.RowDataset(ids, target, **fields), cfg.distill)
    assert len(ds) == len(df)
    tok = models.load_tokenizer(LMConfig.from_preset("tiny-llama").model_id)
    batch = distill.collator(tok, cfg.distill)([ds[1], ds[3]])
    assert batch["input_ids"][:, -1].tolist() == [8, 8 + 4, 10, 10 + 4]  # row, twin, row, twin
    assert batch["labels"].shape == (4, 3) and batch[distill.TEACHER_KEY].shape == (4, 1, 3)
    np.testing.assert_allclose(batch[distill.TEACHER_KEY][1, 0], [0.2, 0.7, 0.1])


def test_a_student_learns_from_a_teacher_that_knows_the_answer(tmp_path, one_thread):
    """80% of the labels uniform: with a teacher that knows them (smoothed true labels) the
    student's held-out accuracy is well above the same run without the teacher."""
    df = planted_rows(120, seed=0)
    truth = true_labels(df)
    data_dir = write_dir(tmp_path / "data", soften(df, 0.8))
    teacher = teacher_file(df, tmp_path / "teacher.csv")
    acc = {}
    for name, teach in (("alone", []), ("taught", [str(teacher)])):
        cfg = LMConfig.from_preset("tiny-llama", data_dir=str(data_dir), val_frac=0.5,
                                   out_dir=str(tmp_path / name), soft_labels=True,
                                   teachers=teach, epochs=6, learning_rate=0.02)
        m = fit.fit(cfg)
        val = runs.read_probs(tmp_path / name / "val.csv").astype({"id": str})
        acc[name] = (val[COLS].to_numpy().argmax(1) == truth[val["id"]].to_numpy()).mean()
        assert m["n_soft_eval"] + m["n_eval"] == len(val) and m["soft_log_loss"] > 0
    assert acc["taught"] >= 0.75 and acc["taught"] >= acc["alone"] + 0.15, acc
    m = runs.read_metrics(tmp_path / "taught")
    assert m["teachers"]["files"][0]["provenance"] == "unknown"
    assert m["teachers"]["files"][0]["leaked_rows"] is None
    assert m["cv_honest"] is False and [x["input"] for x in m["cv_leaks"]] == [
        "teachers", "soft labels of train.csv"]  # neither says what made it


@pytest.mark.slow  # three papermill kernels: ~45 s of CPU; the chain itself runs below
def test_the_recipe_grid_teachers_per_fold_then_a_distilled_student(tmp_path, sample_dir):
    """grids/distill.yaml: teachers per fold -> their OOF -> a student per fold (flagged: OOF
    teachers saw its held-out rows) -> merge-folds -> predict."""
    out = tmp_path / "grid"
    board = grid.run_grid(grid.notebooks.REPO / "grids" / "distill.yaml", sample_dir, out,
                          progress=False)
    assert board["status"].tolist() == ["ok"] * 3, board["error"].tolist()
    m = runs.read_metrics(out / "student")
    assert [f["leaked_rows"] for f in m["teachers"]["files"]] == [200, 200]  # every OOF row
    assert m["teachers"]["weights"] == [0.2] * 5 and m["n_folds"] == 2
    merged = tmp_path / "merged"
    assert cli.main(["merge-folds", str(out / "student"), str(merged)]) == 0
    assert cli.main(["predict", "--model-dir", str(merged), "--data-dir", str(sample_dir),
                     "--out-dir", str(tmp_path / "predict")]) == 0
    sub = pd.read_csv(tmp_path / "predict" / "submission.csv")
    assert len(sub) == len(pd.read_csv(sample_dir / "test.csv"))


def test_the_recipe_per_fold_teachers_student_merge_predict(tmp_path, sample_dir, one_thread):
    """The 1st place's chain, leak-free, at tiny scale: teachers trained per fold, each fold
    scores the training rows (`pseudo-label --split train`), fold k of the student distils
    from fold k's file (mismatched folds are refused), then merge-folds and predict."""
    teacher = tmp_path / "teacher"
    fit.fit(EncoderConfig.from_preset("tiny-roberta", data_dir=str(sample_dir), n_folds=2,
                                      max_steps=2, out_dir=str(teacher)))
    for k in (0, 1):
        assert cli.main(["pseudo-label", "--model-dir", str(teacher / "model" / f"fold_{k}"),
                         "--data-dir", str(sample_dir), "--split", "train",
                         "--out-dir", str(tmp_path / "t" / f"fold_{k}")]) == 0
    spec = str(tmp_path / "t" / "fold_{fold}" / teachers.PSEUDO_LABELS)
    cfg = LMConfig.from_preset("tiny-llama", data_dir=str(sample_dir), n_folds=2, max_steps=2,
                               out_dir=str(tmp_path / "student"), teachers=[spec])
    files = fit.fit(cfg)["teachers"]["files"]
    assert files[0]["per_fold"] and files[0]["leaked_rows"] == 0
    assert files[0]["provenance"] == "never_saw"
    merged = tmp_path / "merged"
    assert cli.main(["merge-folds", str(tmp_path / "student"), str(merged)]) == 0
    assert cli.main(["predict", "--model-dir", str(merged), "--data-dir", str(sample_dir),
                     "--out-dir", str(tmp_path / "predict")]) == 0
    assert len(pd.read_csv(tmp_path / "predict" / "submission.csv")) == 50
    with pytest.raises(data.DataError, match="the teacher's folds must match"):
        fit.fit(cfg.replace(seed=7, out_dir=str(tmp_path / "other-folds")))


# --- XGBoost as teacher and as student (issue 29) -----------------------------------------

def xgb_cfg(sample_dir, out, **kw):
    return XGBConfig(data_dir=str(sample_dir), out_dir=str(out), n_folds=2, n_estimators=10,
                     early_stopping_rounds=0, n_jobs=1, **kw)


def test_xgb_folds_pseudo_label_test_rows_for_an_lm_student_without_leaks(tmp_path, sample_dir,
                                                                           one_thread):
    """XGB k-fold -> `pseudo-label --per-fold` of test.csv -> an LM k-fold student whose fold k
    trains on fold k's file: used, and honest; other folds (seed 7) are refused."""
    xgb.fit(xgb_cfg(sample_dir, tmp_path / "xgb"))
    assert cli.main(["pseudo-label", "--model-dir", str(tmp_path / "xgb"), "--data-dir",
                     str(sample_dir), "--per-fold", "--out-dir", str(tmp_path / "pl")]) == 0
    spec = str(tmp_path / "pl" / "fold_{fold}" / teachers.PSEUDO_LABELS)
    cfg = LMConfig.from_preset("tiny-llama", data_dir=str(sample_dir), n_folds=2, max_steps=1,
                               out_dir=str(tmp_path / "student"), soft_labels=True,
                               extra_train=[spec])
    m = fit.fit(cfg)
    assert m["cv_honest"] is True and m["cv_leaks"] == [] and m["extra_train"]["rows"] == 100
    assert runs.read_metrics(tmp_path / "student")["cv_honest"] is True
    with pytest.raises(data.DataError, match=r"extra_train .*fold_\{fold\}.* \(fold 0\): its "
                                             r"models trained on \d+ of this fold's"):
        fit.fit(cfg.replace(seed=7, out_dir=str(tmp_path / "other-folds")))


def test_an_xgb_student_is_honest_with_per_fold_teacher_files_not_with_an_oof(
        tmp_path, sample_dir):
    xgb.fit(xgb_cfg(sample_dir, tmp_path / "xgb"))
    assert cli.main(["pseudo-label", "--model-dir", str(tmp_path / "xgb"), "--data-dir",
                     str(sample_dir), "--split", "train", "--per-fold",
                     "--out-dir", str(tmp_path / "t")]) == 0
    spec = str(tmp_path / "t" / "fold_{fold}" / teachers.PSEUDO_LABELS)
    per_fold = xgb.fit(xgb_cfg(sample_dir, tmp_path / "a", teachers=[spec]))
    assert per_fold["cv_honest"] is True and per_fold["teachers"]["files"][0]["leaked_rows"] == 0
    assert per_fold["teachers"]["weights"] == [0.5, 0.5]  # label, teacher
    own_oof = xgb.fit(xgb_cfg(sample_dir, tmp_path / "b", teachers=[str(tmp_path / "xgb")]))
    (leak,) = own_oof["cv_leaks"]
    assert own_oof["cv_honest"] is False and leak["leaked_rows"] == 200
    assert leak["provenance"] == "saw" and leak["file"] == str(tmp_path / "xgb")
    with pytest.raises(data.DataError, match="the teacher's folds must match"):
        xgb.fit(xgb_cfg(sample_dir, tmp_path / "c", teachers=[spec], seed=7))


def test_xgb_trains_on_the_mixture_of_label_and_teacher(tmp_path, sample_dir):
    train = data.load_split(sample_dir / "train.csv")
    uniform = pd.DataFrame({"id": train["id"], **{c: 1 / 3 for c in COLS}})
    uniform.to_csv(tmp_path / "uniform.csv", index=False)
    cfg = xgb_cfg(sample_dir, tmp_path / "mix", teachers=[str(tmp_path / "uniform.csv")],
                  teacher_weights=[3, 1])
    rows = labels.load_training(cfg.data)
    feats = xgb.Features(train, extra=rows.extra_rows(None))
    fits = levers.plan(rows, feats, [(np.arange(100), np.arange(100, 200))])
    np.testing.assert_allclose(fits[0].targets[:100], 0.75 * labels.targets(train)[:100]
                               + 0.25 / 3)
    np.testing.assert_array_equal(fits[0].targets[100:], labels.targets(train)[100:])
    assert len(fits) == 2 and fits[1].extra.size == 0  # the final booster: every row
    only_teacher = xgb.fit(cfg.replace(teacher_weights=[0, 1]))  # learns nothing but 1/3
    oof = runs.read_probs(tmp_path / "mix" / "oof.csv")[COLS].to_numpy()
    assert np.abs(oof - 1 / 3).max() < 0.01 and only_teacher["log_loss"] == pytest.approx(
        np.log(3), abs=0.01)
    assert only_teacher["cv_honest"] is False  # a CSV with no run beside it: unknown
    assert only_teacher["cv_leaks"][0]["leaked_rows"] is None
    plain = xgb_cfg(sample_dir, tmp_path / "plain")
    assert levers.plan(labels.load_training(plain.data), feats, []) == [None]  # as before
