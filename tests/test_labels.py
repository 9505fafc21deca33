"""Soft labels and teacher files (lmsys_pref.data.labels, .teachers): torch-free checks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic_rows import planted_rows, soften, teacher_file, write_dir

from lmsys_pref import data, runs
from lmsys_pref.configs import ConfigError
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.configs.xgb import XGBConfig
from lmsys_pref.data import labels, metrics, provenance, teachers

COLS = list(data.LABEL_COLS)


def soft_file(tmp_path, values, name="train.csv"):
    df = planted_rows(len(values))
    df[COLS] = np.asarray(values, dtype=object)
    df.to_csv(tmp_path / name, index=False)
    return tmp_path / name, df


def test_one_hot_stays_strict_unless_the_run_says_soft(tmp_path):
    path, df = soft_file(tmp_path, [[1, 0, 0], [0.5, 0.25, 0.25]])
    with pytest.raises(data.DataError, match=r"row id 1001: .* not one-hot"):
        data.load_split(path)
    got = data.load_split(path, label_check=labels.label_check(True))
    assert got["label"].tolist() == [0, 0] and got[COLS].dtypes.eq(float).all()
    np.testing.assert_allclose(labels.targets(got), [[1, 0, 0], [0.5, 0.25, 0.25]])
    assert labels.hard_mask(got).tolist() == [True, False]


@pytest.mark.parametrize("row, message", [
    ([0.5, 0.5, 0.1], r"row id 1001: columns \['winner_model_a', 'winner_model_b', "
                      r"'winner_tie'\] sum to 1.1 .* within 1e-06"),
    ([1.2, -0.2, 0.0], r"row id 1001: column 'winner_model_a' is 1.2, expected a probability"),
    (["", 0.5, 0.5], r"row id 1001: column 'winner_model_a' is empty"),
    ([0.3, "x", 0.7], r"row id 1001: column 'winner_model_b' is 'x'"),
])
def test_soft_label_validation_names_file_row_and_column(tmp_path, row, message):
    path, _ = soft_file(tmp_path, [[0, 1, 0], row])
    with pytest.raises(data.DataError, match=message) as err:
        data.load_split(path, label_check=labels.check_soft)
    assert str(err.value).startswith(str(path))


def test_sum_tolerance_is_one_in_a_million(tmp_path):
    path, _ = soft_file(tmp_path, [[1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 5e-7]])
    assert len(data.load_split(path, label_check=labels.check_soft)) == 2
    path, _ = soft_file(tmp_path, [[0.5, 0.5, 2e-6]])
    with pytest.raises(data.DataError, match="sum to"):
        data.load_split(path, label_check=labels.check_soft)


def test_soft_log_loss_generalises_the_log_loss():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    assert metrics.soft_log_loss(np.eye(3)[[0, 1]], probs) == pytest.approx(
        metrics.log_loss([0, 1], probs))
    uniform = np.full((2, 3), 1 / 3)
    assert metrics.soft_log_loss(uniform, probs) == pytest.approx(
        -np.log(probs).mean(1).mean())


def test_headline_scores_the_one_hot_rows_and_soft_rows_say_so(tmp_path):
    path, _ = soft_file(tmp_path, [[1, 0, 0], [0, 0, 1], [0.2, 0.5, 0.3]])
    rows = data.load_split(path, label_check=labels.check_soft)
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.2, 0.5, 0.3]])
    hard, soft = labels.scored(rows, probs)
    assert hard.tolist() == [True, True, False]
    assert soft == {"soft_log_loss": pytest.approx(metrics.soft_log_loss([[0.2, 0.5, 0.3]],
                                                                         probs[2:])),
                    "n_soft_eval": 1}
    assert labels.scored(rows.iloc[:2], probs[:2])[1] == {}


def test_config_ranges_and_space_separated_paths():
    cfg = LMConfig(teachers="a.csv b.csv", extra_train="x.csv", swap_augment="pair")
    assert cfg.teachers == ["a.csv", "b.csv"] and cfg.extra_train == ["x.csv"]
    assert cfg.swap_augment == "pair" and LMConfig(swap_augment="true").swap_augment is True
    assert XGBConfig(extra_train="p q").extra_train == ["p", "q"]
    with pytest.raises(ConfigError, match="'distill_weights'.* must be 5 numbers"):
        LMConfig(teachers="a b", distill_weights=[1, 1, 1])
    with pytest.raises(ConfigError, match="'distill_weights'"):
        LMConfig(teachers="a", distill_weights=[1, -1, 1])
    with pytest.raises(ConfigError, match="'distill_temperature'.* > 0"):
        LMConfig(distill_temperature=0)
    with pytest.raises(ConfigError, match="'swap_augment'"):
        LMConfig(swap_augment="twice")
    assert teachers.loss_weights([], 2) == [0.2] * 5  # the 1st place's fifths


# --- teacher files ------------------------------------------------------------------------

def teacher_cfg(tmp_path, specs, **kw):
    return LMConfig(data_dir=str(tmp_path), out_dir=str(tmp_path / "run"), teachers=specs, **kw)


def test_teacher_file_checks_name_file_row_and_column(tmp_path):
    bad = pd.DataFrame({"id": ["1", "2"], "winner_model_a": [0.5, 0.9],
                        "winner_model_b": [0.5, 0.3], "winner_tie": [0.0, 0.0]})
    bad.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(data.DataError, match=r"teacher .*t.csv: row id 2: .* sum to 1.2"):
        teachers.read(tmp_path / "t.csv")
    bad.drop(columns="winner_tie").to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(data.DataError, match=r"missing column\(s\) \['winner_tie'\]"):
        teachers.read(tmp_path / "t.csv")
    with pytest.raises(FileNotFoundError, match="no such file"):
        teachers.TeacherSet.load(teacher_cfg(tmp_path, "nope.csv").data)


def test_missing_teacher_id_is_a_named_error_with_the_first_ids(tmp_path):
    df = planted_rows(30)
    teacher_file(df.iloc[3:], tmp_path / "t.csv")
    tset = teachers.TeacherSet.load(teacher_cfg(tmp_path, str(tmp_path / "t.csv")).data)
    ids = df["id"].tolist()
    tset.check([(ids[3:], ids[:3])])  # the held-out rows need no teacher row
    with pytest.raises(data.DataError, match=r"teacher .*t.csv: no probabilities for 3 training "
                                             r"row\(s\) of fold 0: ids \['1000', '1001', '1002'\]"):
        tset.check([(ids, [])])


def test_teacher_rows_attach_by_id_in_row_order(tmp_path):
    df = planted_rows(6)
    teacher_file(df.iloc[::-1], tmp_path / "t.csv", smooth=0.3)
    tset = teachers.TeacherSet.load(teacher_cfg(tmp_path, str(tmp_path / "t.csv")).data)
    rows = tset.attach(df.iloc[[4, 1]], 0)
    got = teachers.probabilities(rows, 1)[:, 0]
    np.testing.assert_allclose(got, df[COLS].to_numpy(float)[[4, 1]] * 0.7 + 0.1)


def fake_run(path, ids, eval="oof"):
    """A run folder's oof.csv/val.csv + metrics.json (what provenance reads)."""
    path.mkdir(parents=True)
    p = np.tile([0.5, 0.3, 0.2], (len(ids), 1))
    runs.probs_frame(ids, p, [0] * len(ids)).to_csv(path / runs.EVAL_FILES[eval], index=False)
    (path / "metrics.json").write_text(json.dumps({"eval": eval}))
    return path


def test_an_oof_teacher_saw_the_held_out_rows_and_is_flagged(tmp_path):
    ids = [str(i) for i in range(20)]
    fake_run(tmp_path / "xgb", ids)
    tset = teachers.TeacherSet.load(teacher_cfg(tmp_path, str(tmp_path / "xgb")).data)  # a folder
    tset.check([(ids[5:], ids[:5]), (ids[:15], ids[15:])])
    files = tset.report()["files"]
    assert files[0]["leaked_rows"] == 10 and files[0]["provenance"] == "saw"
    plain = teacher_file(planted_rows(3), tmp_path / "plain.csv")
    tset = teachers.TeacherSet.load(teacher_cfg(tmp_path, str(plain)).data)
    tset.check([([], ["1000"])])
    assert tset.report()["files"][0]["leaked_rows"] is None  # provenance unknown
    (leak,) = tset.leak_entries()  # a copied file with no run beside it: not honest either
    assert leak["provenance"] == "unknown" and leak["file"] == str(plain)


def test_per_fold_teachers_must_match_the_folds(tmp_path):
    ids = [str(i) for i in range(20)]
    held = [ids[:10], ids[10:]]
    for k in (0, 1):  # what `pseudo-label --split train` writes for a teacher fold
        fold = tmp_path / f"fold_{k}"
        fold.mkdir()
        teacher_file(pd.DataFrame({"id": ids, **{c: [1, 0, 0][j] for j, c in enumerate(COLS)}}),
                     fold / teachers.PSEUDO_LABELS)
        (fold / teachers.PSEUDO_META).write_text(json.dumps({"never_saw": held[k]}))
    spec = str(tmp_path / "fold_{fold}" / teachers.PSEUDO_LABELS)
    tset = teachers.TeacherSet.load(teacher_cfg(tmp_path, spec, n_folds=2).data)
    tset.check([(held[1], held[0]), (held[0], held[1])])
    assert tset.report()["files"][0]["leaked_rows"] == 0
    with pytest.raises(data.DataError, match=r"fold 0\): its models trained on 10 of this fold's"
                                             r" 10 held-out rows; the teacher's folds must match"):
        tset.check([(held[0], held[1]), (held[1], held[0])])  # folds swapped


def test_load_training_checks_soft_labels_extra_rows_and_teachers(tmp_path):
    df = planted_rows(12)
    write_dir(tmp_path, soften(df, 0.5))
    teacher_file(df, tmp_path / "t.csv")
    cfg = teacher_cfg(tmp_path, str(tmp_path / "t.csv"), soft_labels=True)
    got = labels.load_training(cfg.data)
    assert len(got.train) == 12 and got.extra is None and not labels.hard_mask(got.train).all()
    with pytest.raises(data.DataError, match="not one-hot"):
        labels.load_training(cfg.replace(soft_labels=False).data)


# --- provenance: cv_honest and cv_leaks of the label files (issue 29) ---------------------

HALVES = [(np.arange(6, 12), np.arange(6)), (np.arange(6), np.arange(6, 12))]


def test_soft_train_rows_leak_unless_a_record_says_what_made_them(tmp_path):
    df = planted_rows(12)
    write_dir(tmp_path, soften(df, 0.5, seed=3))
    cfg = LMConfig(data_dir=str(tmp_path), out_dir=str(tmp_path / "run"), soft_labels=True)
    rows = labels.load_training(cfg.data)
    assert all((~labels.hard_mask(rows.train))[tr].any() for tr, _ in HALVES)
    rows.prepare(HALVES)
    report = rows.report()
    (leak,) = report["cv_leaks"]
    assert report["cv_honest"] is False and leak["leaked_rows"] is None
    assert leak["input"] == "soft labels of train.csv" and leak["provenance"] == "unknown"
    assert leak["file"] == str(tmp_path / "train.csv") and "soft-labelled row(s)" in leak["why"]
    ids = df["id"].tolist()
    for never, leaked in ((ids[:6], 6), (ids, 0)):  # the record of the models that made them
        (tmp_path / "train.json").write_text(json.dumps({"never_saw": never, "split": "train"}))
        rows = labels.load_training(cfg.data)
        rows.prepare(HALVES)
        assert [x["leaked_rows"] for x in rows.report()["cv_leaks"]] == ([leaked] if leaked
                                                                          else [])


def test_extra_files_leak_by_their_record_unknown_when_soft_without_one(tmp_path):
    df = planted_rows(12)
    write_dir(tmp_path, df)
    extra = planted_rows(4, seed=5, start_id=5000)
    extra.to_csv(tmp_path / "human.csv", index=False)  # one-hot, no record: human labels
    soften(planted_rows(4, seed=6, start_id=6000), 1.0).to_csv(tmp_path / "soft.csv",
                                                                index=False)
    (tmp_path / "pl").mkdir()
    soften(planted_rows(4, seed=7, start_id=7000), 1.0).to_csv(
        tmp_path / "pl" / teachers.PSEUDO_LABELS, index=False)
    (tmp_path / "pl" / teachers.PSEUDO_META).write_text(json.dumps({"never_saw": []}))
    cfg = LMConfig(data_dir=str(tmp_path), out_dir=str(tmp_path / "run"), soft_labels=True,
                   extra_train=[str(tmp_path / n) for n in ("human.csv", "soft.csv",
                                                             "pl/pseudo_labels.csv")])
    rows = labels.load_training(cfg.data)
    rows.prepare(HALVES)
    leaks = {Path(x["file"]).name: x for x in rows.report()["cv_leaks"]}
    assert sorted(leaks) == ["pseudo_labels.csv", "soft.csv"]  # human labels leak nothing
    assert leaks["soft.csv"]["leaked_rows"] is None and leaks["soft.csv"]["provenance"] == \
        "unknown"
    assert leaks["pseudo_labels.csv"]["leaked_rows"] == 12  # a final model: saw both halves


def test_a_record_naming_a_leaky_run_passes_its_leak_on(tmp_path):
    record = {"never_saw": ["1", "2"], "models": [
        {"model_dir": "runs/t/model/fold_0", "trained_on": {"run_cv_honest": False}}]}
    (tmp_path / "p.json").write_text(json.dumps(record))
    src = provenance.of_labels(tmp_path / "p.csv", one_hot=False)
    assert src.kind == "upstream" and src.leaked(["3"]) is None and "runs/t" in src.why(None)
    record["models"][0]["trained_on"]["run_cv_honest"] = True
    (tmp_path / "p.json").write_text(json.dumps(record))
    src = provenance.of_labels(tmp_path / "p.csv", one_hot=False)
    assert src.kind == "never_saw" and src.leaked(["1", "3", "4"]) == 2


def test_all_soft_rows_are_scored_by_their_most_probable_class():
    rows = pd.DataFrame({c: v for c, v in zip(COLS, [[0.6, 0.1], [0.3, 0.2], [0.1, 0.7]])})
    hard, extra = labels.scored(rows, np.full((2, 3), 1 / 3))
    assert hard.tolist() == [True, True] and extra["hard_labels"] == "argmax"


def test_xgb_teacher_weights_range():
    assert XGBConfig(teachers="a b").mixture_weights() == pytest.approx([1 / 3] * 3)
    assert XGBConfig(teachers="a", teacher_weights=[3, 1]).mixture_weights() == [0.75, 0.25]
    assert XGBConfig(teachers="a", teacher_weights=[3, 1]).data.distill_weights == (0.75, 0.25)
    with pytest.raises(ConfigError, match=r"'teacher_weights'.* must be 2 numbers >= 0 \(the "
                                          r"label, then one per teacher\)"):
        XGBConfig(teachers="a", teacher_weights=[1, 1, 1])
