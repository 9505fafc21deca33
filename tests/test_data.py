"""Parsing, validation errors, swap and splits of the data layer."""
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmsys_pref import data
from lmsys_pref.data import splits


def write_csv(tmp_path, rows, name="train.csv"):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def row(i=1, prompt='["hi"]', a='["A"]', b='["B"]', label=(1, 0, 0)):
    return {"id": i, "model_a": "m1", "model_b": "m2", "prompt": prompt, "response_a": a,
            "response_b": b, "winner_model_a": label[0], "winner_model_b": label[1],
            "winner_tie": label[2]}


def test_quirks_fixture_decodes_every_quirk(quirks_dir):
    train = data.load_split(quirks_dir / "train.csv")
    assert len(train) == 40 and train["label"].between(0, 2).all()
    for col in data.TEXT_COLS:
        assert all(isinstance(v, list) and all(isinstance(t, str) for t in v) for v in train[col])
    assert any(v == [] for v in train["response_b"])                    # null cell / empty list
    assert any(v == [""] for v in train["response_a"])                  # [null] turn
    assert (train["response_a"] == train["response_b"]).any()           # identical answers
    assert any(len(v) > 1 for v in train["prompt"])                     # multi-turn
    assert any("\ufffd" in t for v in train["response_a"] for t in v)   # lone surrogate repaired
    assert max(len(t) for v in train["response_a"] for t in v) > 10_000  # very long text
    json.dumps(train["response_a"].tolist())  # surrogates no longer break json.dumps


def test_lone_surrogate_is_replaced_and_pairs_kept():
    assert data.clean_text("x\ud83dy") == "x\ufffdy"
    assert data.clean_text("\ud83d\ude00") == "\U0001F600"
    assert data.decode_turns('["a\\ud83d", null]') == ["a\ufffd", ""]
    assert data.decode_turns("null") == []


def test_broken_json_names_file_row_and_column(tmp_path):
    path = write_csv(tmp_path, [row(1), row(77, a='["unterminated')])
    with pytest.raises(data.DataError) as err:
        data.load_split(path)
    msg = str(err.value)
    assert str(path) in msg and "row id 77" in msg and "response_a" in msg


def test_lenient_mode_repairs_and_logs(tmp_path, caplog):
    path = write_csv(tmp_path, [row(1), row(77, a='["unterminated')])
    df = data.load_split(path, lenient=True)
    assert len(df) == 2 and df.loc[1, "response_a"] == ['["unterminated']
    assert "77" in caplog.text and "repaired 1" in caplog.text


def test_missing_column_is_named(tmp_path):
    rows = [{k: v for k, v in row().items() if k != "response_b"}]
    with pytest.raises(data.DataError, match="response_b"):
        data.load_split(write_csv(tmp_path, rows, "test.csv"))


def test_labels_not_one_hot(tmp_path):
    path = write_csv(tmp_path, [row(1), row(5, label=(1, 1, 0))])
    with pytest.raises(data.DataError, match=r"row id 5.*one-hot"):
        data.load_split(path)


def test_duplicate_ids(tmp_path):
    with pytest.raises(data.DataError, match="duplicate id"):
        data.load_split(write_csv(tmp_path, [row(3), row(3)]))


def test_parquet_round_trip(tmp_path, quirks_dir):
    raw = pd.read_csv(quirks_dir / "train.csv", keep_default_na=False)
    raw.to_parquet(tmp_path / "train.parquet")
    a = data.load_split(quirks_dir / "train.csv")
    b = data.load_split(tmp_path / "train.parquet")
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


def test_empty_cell_reads_as_no_turns_and_is_logged(tmp_path, caplog):
    df = data.load_split(write_csv(tmp_path, [row(1), row(8, b="")]))
    assert df.loc[1, "response_b"] == [] and "ids ['8']" in caplog.text


def test_labels_and_onehot_round_trip(quirks_dir):
    df = data.load_split(quirks_dir / "train.csv")
    assert (data.onehot(df["label"]) == df[list(data.LABEL_COLS)].to_numpy()).all()


texts = st.lists(st.text(max_size=20), max_size=3)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(texts, texts, st.integers(0, 2)), min_size=1, max_size=8))
def test_swap_twice_is_identity(rows):
    df = pd.DataFrame({"id": range(len(rows)), "model_a": "x", "model_b": "y",
                       "prompt": [["p"]] * len(rows), "response_a": [r[0] for r in rows],
                       "response_b": [r[1] for r in rows], "label": [r[2] for r in rows]})
    onehot = data.onehot(df["label"])
    for k, col in enumerate(data.LABEL_COLS):
        df[col] = onehot[:, k].astype(int)
    once = data.swap(df)
    pd.testing.assert_frame_equal(data.swap(once), df)
    assert (once["response_a"] == df["response_b"]).all()
    assert (once["label"] == df["label"].map({0: 1, 1: 0, 2: 2})).all()
    assert (once[list(data.LABEL_COLS)].to_numpy().argmax(1) == once["label"]).all()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)), min_size=1))
def test_swap_of_probabilities(rows):
    p = np.array(rows)
    assert (data.swap(data.swap(p)) == p).all()
    assert (data.swap(p)[:, 0] == p[:, 1]).all() and (data.swap(p)[:, 2] == p[:, 2]).all()


def test_splits_are_seeded_stratified_and_complete(quirks_dir):
    labels = data.load_split(quirks_dir / "train.csv")["label"].to_numpy()
    tr, va = splits.holdout(labels, 0.2, seed=1)
    assert len(va) == 8 and set(tr) | set(va) == set(range(40)) and not set(tr) & set(va)
    assert (splits.holdout(labels, 0.2, seed=1)[1] == va).all()
    folds = splits.kfold(labels, 5, seed=1)
    assert sorted(np.concatenate([v for _, v in folds]).tolist()) == list(range(40))


def test_tile_gives_unique_ids(quirks_dir):
    df = data.load_split(quirks_dir / "train.csv")
    big = data.tile(df, 100)
    assert len(big) == 100 and big["id"].is_unique


def grouped_frame(n_groups=40, seed=0):
    """Rows whose prompts repeat 1-4 times (one label per row) and their group sizes."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, n_groups)
    prompts = [[f"question {g}"] + (["follow-up"] if g % 3 == 0 else [])
               for g, size in enumerate(sizes) for _ in range(size)]
    return pd.DataFrame({"prompt": prompts, "label": rng.integers(0, 3, len(prompts))}), sizes


def assert_groups_kept(groups, splits):
    for tr, va in splits:
        assert not set(groups[tr]) & set(groups[va])
        assert len(tr) + len(va) == len(groups) and not set(tr) & set(va)


def test_fold_groups_tie_rows_with_the_same_prompt():
    df, sizes = grouped_frame()
    g = splits.fold_groups(df, "prompt")
    assert g.dtype == np.int64 and len(np.unique(g)) == len(sizes)
    assert np.bincount(g).tolist() == sizes.tolist()  # factorize numbers groups in row order
    assert splits.fold_groups(df, "none") is None
    text = df.assign(prompt=df["prompt"].map(lambda t: "\n".join(t)))  # undecoded text works too
    assert len(np.unique(splits.fold_groups(text, "prompt"))) == len(sizes)
    with pytest.raises(ValueError, match="group_by"):
        splits.fold_groups(df, "model")
    with pytest.raises(data.DataError, match="'prompt' column"):
        splits.fold_groups(df.drop(columns="prompt"), "prompt")


def test_grouped_splits_keep_each_prompt_on_one_side():
    df, _ = grouped_frame(seed=1)
    y, g = df["label"].to_numpy(), splits.fold_groups(df, "prompt")
    folds = splits.kfold(y, 5, seed=3, groups=g)
    assert_groups_kept(g, folds)
    assert sorted(np.concatenate([v for _, v in folds]).tolist()) == list(range(len(df)))
    assert splits.kfold(y, 5, seed=3, groups=g)[2][1].tolist() == folds[2][1].tolist()  # seeded
    tr, va = splits.holdout(y, 0.2, seed=3, groups=g)
    assert_groups_kept(g, [(tr, va)])
    assert 0.1 < len(va) / len(df) < 0.3
    # a row per group: exactly the ungrouped splits (runs without shared prompts are unchanged)
    single = np.arange(len(y))
    assert [v.tolist() for _, v in splits.kfold(y, 4, 5, groups=single)] == [
        v.tolist() for _, v in splits.kfold(y, 4, 5)]
    assert (splits.holdout(y, 0.2, 5, groups=single)[1].tolist()
            == splits.holdout(y, 0.2, 5)[1].tolist())
    with pytest.raises(ValueError, match="groups"):
        splits.kfold(y, 5, groups=g[:-1])


def test_real_rows_sharing_a_prompt_never_straddle_a_split(arena_dir):
    df = data.load_split(arena_dir / "train.csv", lenient=True)
    y, g = df["label"].to_numpy(), splits.fold_groups(df, "prompt")
    assert (np.bincount(g)[g] > 1).sum() == 29  # the rows that share a prompt with another row
    ungrouped = splits.kfold(y, 5, seed=42)  # what happened before groups: shared prompts leak
    assert any(set(g[tr]) & set(g[va]) for tr, va in ungrouped)
    share = np.bincount(y) / len(y)
    for seed in (0, 42):
        folds = splits.kfold(y, 5, seed, groups=g)
        holdout = splits.holdout(y, 0.2, seed, groups=g)
        assert_groups_kept(g, folds + [holdout])
        for _, va in folds + [holdout]:
            assert abs(len(va) - 300) <= 10  # a fifth, give or take a group
            np.testing.assert_allclose(np.bincount(y[va], minlength=3) / len(va), share, atol=0.03)


@pytest.mark.parametrize("cell, kind, turn", [
    ('[{"role": "user", "content": "hi"}]', "JSON object", 0),
    ('["fine", 5]', "JSON number", 1),
    ('["a", ["nested"]]', "JSON array", 1),
    ('["a", "b", true]', "JSON boolean", 2),
])
def test_a_turn_that_is_not_a_string_is_named(tmp_path, cell, kind, turn, caplog):
    path = write_csv(tmp_path, [row(1), row(42, prompt=cell)])
    with pytest.raises(data.DataError) as err:
        data.load_split(path)
    assert str(err.value).startswith(f"{path}: row id 42, column 'prompt', turn {turn}: a {kind}")
    assert "expected a string or null" in str(err.value)
    lenient = data.load_split(path, lenient=True)  # kept as its JSON text, logged
    assert lenient.loc[1, "prompt"][turn] == json.dumps(json.loads(cell)[turn])
    assert "repaired 1 row(s) in column 'prompt': ids ['42']" in caplog.text


def test_uneven_turn_counts_are_reported_and_evened_out_for_every_layout(tmp_path, caplog):
    from lmsys_pref.xgb import features

    rows = [row(1), row(2, prompt='["q1", "q2", "q3"]', a='["a1", "a2"]', b='["b1", "b2", "b3"]'),
            row(3, prompt='["q1", "q2"]', a='["a1", "a2"]', b="[]"),  # an empty answer: kept
            row(4, prompt='["q1"]', a='["a1", "a2"]', b='["b1"]')]
    df = data.load_split(write_csv(tmp_path, rows))
    assert "2 row(s) whose prompt and answers have different turn counts (ids ['2', '4'])" in \
        caplog.text
    assert df.loc[1, "response_a"] == ["a1", "a2", ""]
    assert df.loc[3, "prompt"] == ["q1", ""] and df.loc[3, "response_b"] == ["b1", ""]
    assert df.loc[2, "response_b"] == []
    flags = features.build(df)  # features, prompt layouts and probes see the same turn counts
    assert flags.loc[1, ["p_turns", "a_turns", "b_turns", "a_empty_turns"]].tolist() == \
        [3, 3, 3, 1]
    for col in data.TEXT_COLS:
        assert df[col].map(len).tolist()[:2] + [len(df.loc[3, col])] == [1, 3, 2]


def test_a_repeated_header_name_is_an_error(tmp_path):
    path = tmp_path / "train.csv"
    text = write_csv(tmp_path, [row(1)]).read_text().splitlines()
    path.write_text(text[0].replace("model_b", "response_a") + "\n" + text[1] + "\n")
    with pytest.raises(data.DataError, match=r"column name\(s\) \['response_a'\] appear more "
                                             "than once in the header"):
        data.load_split(path)


@pytest.mark.parametrize("cut, what", [
    (-12, "ends inside a quoted field"),  # mid-answer
    (-2, "ends after 8 of 9 columns, before column 'winner_tie'"),  # right after a comma
    (-4, "ends after 7 of 9 columns, before column 'winner_model_b'"),
])
def test_a_cut_last_row_is_an_error_unless_lenient(tmp_path, cut, what):
    path = write_csv(tmp_path, [row(1), row(2, b='["a long enough answer"]', label=(0, 1, 0))])
    text = path.read_text()
    path.write_text(text[:cut])
    with pytest.raises(data.DataError) as err:
        data.load_split(path)
    assert str(err.value).startswith(f"{path}: row id 2 (line 3) is cut off") and what in \
        str(err.value)
    assert data.load_split(path, lenient=True)["id"].tolist() == ["1"]  # dropped, logged
    path.write_text(text.rstrip("\n"))  # complete, only without the final newline: fine
    assert data.load_split(path)["id"].tolist() == ["1", "2"]


def test_ids_are_text_from_csv_and_parquet(tmp_path):
    path = write_csv(tmp_path, [row("007"), row("1e3"), row("18446744073709551617")])
    assert data.load_split(path)["id"].tolist() == ["007", "1e3", "18446744073709551617"]
    frame = pd.read_csv(write_csv(tmp_path, [row(5), row(6)], "t.csv"))  # int64 ids
    frame.to_parquet(tmp_path / "t.parquet")
    assert data.load_split(tmp_path / "t.parquet")["id"].tolist() == ["5", "6"]


def test_n_folds_is_checked_against_each_class_and_the_prompts(tmp_path):
    df = data.load_split(write_csv(tmp_path, [row(i, label=(1, 0, 0) if i % 2 else (0, 1, 0))
                                              for i in range(1, 9)]))
    with pytest.raises(data.DataError, match="class 'tie' \\(winner_tie\\) has 0 of 8 rows"):
        data.check_n_folds(df, 2, "train.csv")
    data.check_n_folds(df, 1, "train.csv")  # a holdout or final fit only: nothing to check
    df.loc[:, "label"] = [0, 1, 2, 0, 1, 2, 0, 1]
    with pytest.raises(data.DataError, match="needs at least 2 distinct prompts; the file has 1"):
        data.check_n_folds(df, 2, "train.csv", group_by="prompt")
