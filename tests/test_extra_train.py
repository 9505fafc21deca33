"""`extra_train`: labelled rows that join training only, deduplicated against train/test; and
XGBoost's soft labels (three weighted copies of a row)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from synthetic_rows import planted_rows, soften, teacher_file, write_dir

from lmsys_pref import data, runs, xgb
from lmsys_pref.configs.encoder import EncoderConfig
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.configs.xgb import XGBConfig
from lmsys_pref.data import labels, metrics
from lmsys_pref.train import fit, loop

COLS = list(data.LABEL_COLS)


@pytest.fixture
def folder(tmp_path):
    """train.csv (40 planted rows with some ties), test.csv (10) and extra.csv (20 new rows,
    then a copy of a train row, a test row with A and B swapped, and a repeat of an extra row)."""
    train = planted_rows(40, seed=1, start_id=1)
    train.loc[::5, COLS] = [0, 0, 1]  # every class in every fold
    test = planted_rows(10, seed=2, start_id=500)
    extra = planted_rows(20, seed=3, start_id=9000)
    dup_train = train.iloc[[7]].assign(id="9100")
    swapped = test.iloc[[3]].assign(id="9101", response_a=test["response_b"].iloc[3],
                                    response_b=test["response_a"].iloc[3])
    again = extra.iloc[[0]].assign(id="9102")
    pd.concat([extra, dup_train, swapped, again]).to_csv(tmp_path / "extra.csv", index=False)
    write_dir(tmp_path, train, test)
    return tmp_path


def test_rows_repeating_a_train_or_test_conversation_are_dropped_by_id(folder):
    train = data.load_split(folder / "train.csv")
    test = data.load_split(folder / "test.csv")
    extra, report = labels.load_extra([folder / "extra.csv"], [train, test])
    assert len(extra) == 20 and report["rows"] == 20 and report["dropped"] == 3
    assert report["dropped_ids"] == ["9100", "9101", "9102"]
    assert report["files"] == {str(folder / "extra.csv"): {
        "rows": 23, "used": 20, "dropped": 3, "test_rows_kept": 0, "one_hot_rows": 20,
        "repeats": {"train/test": 2, "an earlier extra row": 1}, "provenance": "labels"}}
    clash = planted_rows(2, seed=9, start_id=1)  # new conversations, ids of train.csv
    clash.to_csv(folder / "clash.csv", index=False)
    with pytest.raises(data.DataError, match=r"clash.csv: row id 1: column 'id' repeats an id"):
        labels.load_extra([folder / "clash.csv"], [train, test])


def test_xgb_extra_rows_train_every_fold_but_never_reach_oof_or_metrics(folder):
    out = folder / "xgb"
    base = XGBConfig(data_dir=str(folder), out_dir=str(out), n_folds=2, n_estimators=10,
                     early_stopping_rounds=0, n_jobs=1)
    m = xgb.fit(base.replace(extra_train=[str(folder / "extra.csv")]))
    oof = runs.read_probs(out / "oof.csv")
    assert sorted(oof["id"].astype(str)) == sorted(str(i) for i in range(1, 41))
    assert m["n_train"] == 40 and m["n_eval"] == 40
    assert m["extra_train"]["rows"] == 20 and m["extra_train"]["dropped_ids"] == \
        ["9100", "9101", "9102"]
    plain = xgb.fit(base.replace(out_dir=str(folder / "plain")))
    assert plain["log_loss"] != m["log_loss"] and "extra_train" not in plain


def test_lm_extra_rows_are_training_rows_only(folder, monkeypatch, one_thread):
    seen = []
    train_one = loop.train_one

    def spy(cfg, model, tok, train_df, val_df, out_dir):
        seen.append((set(train_df["id"].astype(str)), set(val_df["id"].astype(str))))
        return train_one(cfg, model, tok, train_df, val_df, out_dir)

    monkeypatch.setattr(loop, "train_one", spy)
    cfg = LMConfig.from_preset("tiny-llama", data_dir=str(folder), out_dir=str(folder / "lm"),
                               max_steps=1, extra_train=[str(folder / "extra.csv")])
    m = fit.fit(cfg)
    extra_ids = {str(9000 + i) for i in range(20)}
    (train_ids, val_ids), = seen
    assert extra_ids <= train_ids and not extra_ids & val_ids
    val = runs.read_probs(folder / "lm" / "val.csv")
    assert not extra_ids & set(val["id"].astype(str)) and m["n_eval"] == len(val)
    assert m["extra_train"]["rows"] == 20


def test_encoder_kfold_with_extra_rows_and_a_teacher(folder, monkeypatch, one_thread):
    """k-fold, encoder kind: every fold trains on the extra rows with the teacher's rows for
    them; oof.csv and held_out.json hold only the competition rows."""
    rows = pd.concat([pd.read_csv(folder / "train.csv", dtype=str),
                      pd.read_csv(folder / "extra.csv", dtype=str).iloc[:20]])
    teacher_file(rows, folder / "teacher.csv")
    seen = []
    train_one = loop.train_one
    monkeypatch.setattr(loop, "train_one", lambda cfg, m, t, tr, va, o: (
        seen.append(tr), train_one(cfg, m, t, tr, va, o))[1])
    cfg = EncoderConfig.from_preset("tiny-roberta", data_dir=str(folder), max_steps=1,
                                    out_dir=str(folder / "enc"), teachers=[str(folder /
                                                                               "teacher.csv")],
                                    extra_train=[str(folder / "extra.csv")])
    m = fit.fit(cfg)
    assert len(seen) == 2 and all(tr["id"].astype(str).str.startswith("90").sum() == 20
                                  for tr in seen)
    assert all(tr["teacher0_winner_tie"].notna().all() for tr in seen)
    oof = runs.read_probs(folder / "enc" / "oof.csv")
    assert len(oof) == 40 and not oof["id"].astype(str).str.startswith("90").any()
    held = runs.load_json(folder / "enc" / "model" / runs.HELD_OUT)
    assert sorted(str(i) for ids in held.values() for i in ids) == \
        sorted(oof["id"].astype(str))
    assert m["teachers"]["files"][0]["leaked_rows"] is None and m["extra_train"]["rows"] == 20


def test_a_missing_teacher_row_for_an_extra_row_stops_before_any_model(folder, monkeypatch):
    teacher_file(pd.read_csv(folder / "train.csv", dtype=str), folder / "teacher.csv")
    monkeypatch.setattr(fit.models, "build", lambda *a, **k: pytest.fail("model built"))
    cfg = LMConfig.from_preset("tiny-llama", data_dir=str(folder), out_dir=str(folder / "x"),
                               teachers=[str(folder / "teacher.csv")],
                               extra_train=[str(folder / "extra.csv")])
    with pytest.raises(data.DataError, match=r"teacher .*teacher.csv: no probabilities for 20 "
                                             r"training row\(s\) of fold 0: ids \['9000'"):
        fit.fit(cfg)


def test_xgb_soft_labels_train_as_three_weighted_copies(folder):
    X = pd.DataFrame({"f": [1.0, 2.0, 3.0]})
    t = np.array([[1, 0, 0], [0.5, 0.5, 0], [0.2, 0.3, 0.5]])
    m = xgb.weighted_matrix(X, t)
    assert m.num_row() == 6 and m.get_label().tolist() == [0, 0, 1, 0, 1, 2]
    np.testing.assert_allclose(m.get_weight(), [1, 0.5, 0.5, 0.2, 0.3, 0.5])
    one_hot = xgb.weighted_matrix(X, np.eye(3))
    assert one_hot.num_row() == 3 and one_hot.get_weight().size == 0  # as before: unweighted
    write_dir(folder, soften(planted_rows(40, seed=1, start_id=1).pipe(
        lambda d: d.assign(**{c: v for c, v in zip(COLS, np.eye(3)[np.arange(40) % 3].T)})),
        0.3))
    cfg = XGBConfig(data_dir=str(folder), out_dir=str(folder / "soft"), n_folds=2,
                    n_estimators=10, early_stopping_rounds=0, n_jobs=1)
    with pytest.raises(data.DataError, match="not one-hot"):
        xgb.fit(cfg)
    m = xgb.fit(cfg.replace(soft_labels=True))
    assert m["n_soft_eval"] + m["n_eval"] == 40 and m["soft_log_loss"] > 0


# --- pseudo-labelled test rows, files left empty, all-soft runs (issue 29) -----------------

def pseudo_output(folder, rows, name="pl", split="test", never_saw=()):
    """What `pseudo-label` writes: the rows with soft labels, and its record beside them."""
    out = folder / name
    out.mkdir()
    rows.assign(**dict(zip(COLS, [0.5, 0.3, 0.2]))).to_csv(out / "pseudo_labels.csv", index=False)
    (out / "pseudo_labels.json").write_text(json.dumps({"split": split, "models": [],
                                                        "never_saw": list(never_saw)}))
    return out / "pseudo_labels.csv"


def test_pseudo_labelled_test_rows_join_training_labelled_copies_do_not(folder):
    train = data.load_split(folder / "train.csv")
    test = data.load_split(folder / "test.csv")
    path = pseudo_output(folder, planted_rows(10, seed=2, start_id=500))  # the test rows
    extra, report = labels.load_extra([path], [train], soft=True, unlabelled=test)
    assert extra["id"].tolist() == test["id"].tolist()  # kept, their ids too
    entry = report["files"][str(path)]
    assert entry["used"] == entry["test_rows_kept"] == 10 and entry["dropped"] == 0
    assert entry["provenance"] == "never_saw" and entry["repeats"]["train"] == 0
    path.with_suffix(".json").unlink()  # no record: labelled copies of the test rows
    with pytest.raises(data.DataError, match=rf"extra_train {path}: every one of its 10 row\(s\)"
                                             r" repeats a conversation of train \(0\), test "
                                             r"\(10\), .*labelled copies of test rows"):
        labels.load_extra([path], [train], soft=True, unlabelled=test)
    teacher = pseudo_output(folder, pd.read_csv(folder / "train.csv", dtype=str), "t", "train")
    with pytest.raises(data.DataError, match=r"repeats a conversation of train \(40\).* is a "
                                             r"teacher file \(-p teachers\)"):
        labels.load_extra([teacher], [train], soft=True, unlabelled=test)


def test_a_file_left_without_rows_stops_the_run_before_any_booster(folder, monkeypatch):
    pd.read_csv(folder / "train.csv", dtype=str).iloc[:5].assign(
        id=[str(9500 + i) for i in range(5)]).to_csv(folder / "copies.csv", index=False)
    monkeypatch.setattr(xgb.booster, "train_booster", lambda *a, **k: pytest.fail("trained"))
    cfg = XGBConfig(data_dir=str(folder), out_dir=str(folder / "x"), n_folds=2, n_jobs=1,
                    extra_train=[str(folder / "copies.csv"), str(folder / "extra.csv")])
    with pytest.raises(data.DataError, match=r"copies.csv: every one of its 5 row\(s\) repeats a "
                                             r"conversation of train \(5\)"):
        xgb.fit(cfg)


def test_an_all_soft_run_is_scored_against_the_most_probable_class(folder):
    rows = planted_rows(40, seed=1, start_id=1)
    truth = np.eye(3)[np.arange(40) % 3]  # every class in every fold
    write_dir(folder, rows.assign(**dict(zip(COLS, (0.7 * truth + 0.1).T))))
    m = xgb.fit(XGBConfig(data_dir=str(folder), out_dir=str(folder / "soft"), n_folds=2,
                          n_estimators=10, early_stopping_rounds=0, n_jobs=1, soft_labels=True))
    oof = runs.read_probs(folder / "soft" / "oof.csv")
    assert m["log_loss"] == pytest.approx(metrics.log_loss(np.arange(40) % 3,
                                                           oof[COLS].to_numpy()))
    assert m["n_eval"] == m["n_soft_eval"] == 40 and m["hard_labels"] == "argmax"
    assert m["cv_honest"] is False  # soft rows are model outputs: made by which models?
    (leak,) = m["cv_leaks"]
    assert leak["input"] == "soft labels of train.csv" and leak["leaked_rows"] is None
