"""`lmsys-pref pseudo-label` (`make pseudo-label`): soft labels for unlabelled rows from runs.

    lmsys-pref pseudo-label --model-dir M [--model-dir M2 ...] --data-dir D --out-dir O
                            [--per-fold] [--hard-threshold p] [--split test|train]
                            [--chunk-rows N] [-p k v]

Streams D/test.csv (or .parquet; `--split train` scores train.csv) in chunks of `--chunk-rows`,
so a file of any size fits in memory; each chunk is checked like `data.load_split` (ids, JSON
turn lists), scored by every model with swap TTA (`infer.loaders.load_predictor`: XGBoost or
transformer runs, k-fold runs as their folds' mean) and the models are averaged. Writes:

  O/pseudo_labels.csv   the file's own columns as they are (ids kept verbatim) + the three
                        winner columns: the averaged probabilities (soft labels), or one-hot
                        where the top class reaches `--hard-threshold`; a labelled file for
                        `-p extra_train` (with `-p soft_labels true`) or `-p teachers`
  O/pseudo_labels.json  its record (provenance): the split scored and what its rows are
                        (`rows_are`: unlabelled test rows, or training rows relabelled), each
                        model and what it trained on (`trained_on`: data, rows, levers, whether
                        its run was cv-honest), and `never_saw`: the labelled ids none of the
                        models trained on (a fold's held_out.json, a holdout run's val.csv; a
                        final model fitted on every row, XGBoost's included: none), so a student
                        can check the file for leaks (`lmsys_pref.data.provenance`)

`--per-fold` (k-fold runs, the same folds in every `--model-dir`): one output per fold,
O/fold_k/pseudo_labels.csv + .json, made by the fold-k models only (they never saw fold k's
held-out rows). A student with the same folds reads them with '{fold}':
`-p extra_train O/fold_{fold}/pseudo_labels.csv` (test rows) or `-p teachers ...` (`--split
train`), and its held-out figures stay honest (`cv_honest`); a file made by models that saw a
fold's held-out rows (the final model, a mismatched fold) is flagged or refused.

The 2nd and 3rd places trained on 240k and 500k such rows.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from .. import data, runs
from ..configs import parse_params
from ..data import LABEL_COLS, TEST_COLS, TEXT_COLS, DataError
from ..data.task import AUTO, LMSYS_2024, WINNER, Task, resolve, to_task
from ..data.teachers import PSEUDO_LABELS, PSEUDO_META
from ..data.turns import plain_turns
from ..files import atomic
from ..infer.loaders import load_predictor

log = logging.getLogger("lmsys_pref.pseudo_label")
CHUNK_ROWS = 20_000


def chunks(path: Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Raw chunks of a competition-layout file, cells as the file spells them."""
    if path.suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
        return
    yield from pd.read_csv(path, dtype={"id": str}, keep_default_na=False, encoding="utf-8",
                           na_values={c: [""] for c in TEXT_COLS}, chunksize=chunk_rows)


def decode(raw: pd.DataFrame, name: str, seen: set[str], task: Task = LMSYS_2024
           ) -> pd.DataFrame:
    """One chunk checked and decoded as `data.load_split` does for `task` (text columns as
    turn lists: JSON lists, or plain strings; integer or text ids).

    Raises:
        DataError: a missing column, a bad or repeated id (across chunks too), a cell that is
            not a JSON list; naming the file, the row id and the column.
    """
    missing = [c for c in TEST_COLS if c not in raw.columns]
    if missing:
        raise DataError(f"{name}: missing column(s) {missing}; found {list(raw.columns)[:12]}")
    df = raw[list(TEST_COLS)].reset_index(drop=True)
    df["id"] = data.check_ids(df, name, integer=task.integer_ids)
    again = df["id"][df["id"].isin(seen)]
    if len(again):
        raise DataError(f"{name}: duplicate id(s) {again.head(5).tolist()} in column 'id'")
    seen.update(df["id"])
    turns = plain_turns if task.turns == "plain" else data.decode_turns
    for col in TEXT_COLS:
        df[col] = pd.Series([turns(v, where=f"{name}: row id {rid}, column '{col}'")
                             for rid, v in zip(df["id"], df[col])], dtype=object)
    return df


def never_saw(model_dir: str | Path) -> list[str] | None:
    """The labelled ids a saved model never trained on, where its run tells; None otherwise.

    A fold of a k-fold run (model/fold_k): its held_out.json entry; XGBoost's model/ (the final
    booster, fitted on every labelled row): none; a whole k-fold transformer run: the ids no
    averaged fold trained on; a holdout run: its val.csv.
    """
    m = runs.resolve_model_dir(model_dir)
    if (m.parent / runs.HELD_OUT).is_file() and m.name in runs.load_json(m.parent / runs.HELD_OUT):
        return [str(i) for i in runs.load_json(m.parent / runs.HELD_OUT)[m.name]]
    meta = runs.read_model_meta(m)
    if meta.get("kind") == "xgb":
        return []
    if (m / runs.HELD_OUT).is_file():
        held = runs.load_json(m / runs.HELD_OUT)
        sets = [set(map(str, held[f])) for f in meta.get("folds", [])]
        return sorted(set.intersection(*sets)) if sets else None
    val = m.parent / "val.csv"
    return runs.read_probs(val)["id"].astype(str).tolist() if val.is_file() else None


def trained_on(model_dir: str | Path, never: list[str] | None) -> dict:
    """What a saved model trained on, for the record: its data, labelled rows, levers and
    whether its run's held-out figures were honest (`run_cv_honest`; None: not recorded)."""
    m = runs.resolve_model_dir(model_dir)
    config = runs.read_model_meta(m).get("config", {})
    run_dir = m.parent.parent if (m.parent / runs.HELD_OUT).is_file() else m.parent
    metrics = runs.load_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() \
        else {}
    n_train = metrics.get("n_train")
    return {"data_dir": config.get("data_dir"), "fold": runs.read_model_meta(m).get("fold"),
            "labelled_rows": None if n_train is None or never is None else n_train - len(never),
            "extra_train": config.get("extra_train", []), "teachers": config.get("teachers", []),
            "soft_labels": config.get("soft_labels", False),
            "run_cv_honest": metrics.get("cv_honest")}


ROWS_ARE = {"test": "unlabelled test rows, labelled by the models (any winner columns the file "
                    "had are replaced)",
            "train": "training rows, their labels replaced by the models' probabilities"}


def labels_of(probs: np.ndarray, hard_threshold: float | None) -> np.ndarray:
    """Soft labels, one-hot where the top class reaches `hard_threshold`; rows sum to 1."""
    p = np.asarray(probs, dtype=np.float64)
    p = p / p.sum(1, keepdims=True)
    if hard_threshold is not None:
        sure = p.max(1) >= hard_threshold
        p[sure] = np.eye(p.shape[1])[p[sure].argmax(1)]
    return p


def row_count(text: str) -> int:
    """`--chunk-rows`: a whole number of rows, at least 1 (argparse names the option)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of rows") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: expected at least 1 row per chunk")
    return value


@runs.holds_out_dir  # never into DATA_DIR; one run per OUT_DIR
def pseudo_label(model_dirs: list[str], data_dir: str | Path, out_dir: str | Path,
                 hard_threshold: float | None = None, split: str = "test",
                 chunk_rows: int = CHUNK_ROWS, **overrides) -> dict:
    """Score `data_dir`'s `split` file with every model and write the labelled file.

    Returns:
        The pseudo_labels.json record.
    """
    _check_args(hard_threshold, chunk_rows)
    src = data.find_file(data_dir, split)
    out = runs.prepare_out_dir(out_dir, _outputs(out_dir))
    return _label(model_dirs, src, out, hard_threshold, split, chunk_rows, overrides)


@runs.holds_out_dir  # never into DATA_DIR; one run per OUT_DIR
def pseudo_label_per_fold(model_dirs: list[str], data_dir: str | Path, out_dir: str | Path,
                          hard_threshold: float | None = None, split: str = "test",
                          chunk_rows: int = CHUNK_ROWS, **overrides) -> list[dict]:
    """`pseudo_label` once per fold of k-fold runs: out_dir/fold_k/ from the fold-k models.

    Returns:
        The records, fold by fold.

    Raises:
        DataError: a run without fold models, or runs whose folds hold out different rows.
    """
    _check_args(hard_threshold, chunk_rows)
    folds = fold_names(model_dirs)
    src = data.find_file(data_dir, split)
    out = runs.prepare_out_dir(out_dir, _outputs(out_dir))
    return [_label([runs.resolve_model_dir(m) / fold for m in model_dirs], src, out / fold,
                   hard_threshold, split, chunk_rows, overrides) for fold in folds]


def fold_names(model_dirs: list[str]) -> list[str]:
    """The folds every run of `model_dirs` holds (model/held_out.json), all holding out the same
    rows; a DataError naming the run otherwise."""
    held = []
    for m in model_dirs:
        path = runs.resolve_model_dir(m) / runs.HELD_OUT
        if not path.is_file():
            raise DataError(f"{m}: no {runs.HELD_OUT} (not a k-fold run, or made before fold "
                            "models were kept): --per-fold needs a run with model/fold_k folders")
        held.append({k: sorted(map(str, v)) for k, v in runs.load_json(path).items()})
    for m, h in zip(model_dirs[1:], held[1:]):
        if h != held[0]:
            raise DataError(f"{m}: its folds hold out other rows than {model_dirs[0]}'s; "
                            "--per-fold averages fold k of every run, so the runs need the same "
                            "folds (same rows, n_folds, seed, group_by)")
    return sorted(held[0], key=lambda name: int(name.rsplit("_", 1)[-1]))


def _check_args(hard_threshold: float | None, chunk_rows: int) -> None:
    if hard_threshold is not None and not 0 < hard_threshold <= 1:
        raise ValueError(f"--hard-threshold {hard_threshold}: expected a probability in (0, 1]")
    if chunk_rows < 1:  # pandas would say it in its own words, after the models loaded
        raise ValueError(f"--chunk-rows {chunk_rows}: expected at least 1 row per chunk")


def _outputs(out_dir: str | Path) -> tuple[str, ...]:
    """What an earlier pseudo-label run left in OUT_DIR (moved aside before this one)."""
    folds = [p.name for p in Path(out_dir).glob("fold_*")] if Path(out_dir).is_dir() else []
    return (PSEUDO_LABELS, PSEUDO_META, *folds)


def _label(model_dirs: list, src: Path, out: Path, hard_threshold: float | None, split: str,
           chunk_rows: int, overrides: dict) -> dict:
    """Score `src` with the models (averaged, swap TTA) into out/pseudo_labels.csv + .json."""
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    models = [(m, load_predictor(m, **overrides)) for m in model_dirs]  # bad folder: at once
    saved = runs.read_model_meta(model_dirs[0])["config"].get("task", AUTO)
    task = resolve(AUTO, src.parent, default=resolve(saved, None))  # the folder's, else the run's
    seen: set[str] = set()
    rows = n_hard = 0
    with atomic.atomic_path(out / PSEUDO_LABELS) as tmp:
        for raw in chunks(src, chunk_rows):
            if raw.empty:
                continue
            df = decode(raw, str(src), seen, task)
            probs = np.mean([to_task(p.predict_proba(df, tta="swap"), task)
                             for _, p in models], axis=0)
            lab = labels_of(probs, hard_threshold)
            keep = raw.drop(columns=[c for c in (*LABEL_COLS, "label", WINNER)
                                     if c in raw.columns])
            keep.assign(**dict(zip(task.prob_columns, lab.T))).to_csv(
                tmp, mode="a", header=not rows, index=False)
            rows, n_hard = rows + len(df), n_hard + int((lab.max(1) == 1).sum())
            log.info("pseudo-label: %d rows scored", rows)
        if not rows:
            raise DataError(f"{src}: no data rows (only a header)")
    record = _record(model_dirs, src, split, hard_threshold, rows, n_hard, time.time() - t0)
    runs.save_json(out / PSEUDO_META, record)
    return record


def _record(model_dirs: list, src: Path, split: str, hard_threshold: float | None, rows: int,
            n_hard: int, seconds: float) -> dict:
    """pseudo_labels.json: the file's provenance (`data.provenance.record_of` reads it)."""
    sights = [never_saw(m) for m in model_dirs]
    never = None if any(s is None for s in sights) else sorted(
        set.intersection(*(set(s) for s in sights)))
    return {"models": [{"model_dir": str(m), "kind": runs.read_model_meta(m)["kind"],
                        "never_saw_rows": None if s is None else len(s),
                        "trained_on": trained_on(m, s)} for m, s in zip(model_dirs, sights)],
            "source": str(src), "split": split, "rows_are": ROWS_ARE[split], "tta": "swap",
            "hard_threshold": hard_threshold, "rows": rows, "one_hot_rows": n_hard,
            "seconds": round(seconds, 2), "never_saw": never}


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of `lmsys-pref pseudo-label` (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="lmsys-pref pseudo-label", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", action="append", required=True,
                    help="OUT_DIR of a train run (or its model/, or model/fold_k); repeatable: "
                         "the models' probabilities are averaged")
    ap.add_argument("--data-dir", required=True, help="folder with test.csv (or train.csv)")
    ap.add_argument("--out-dir", required=True, help="gets pseudo_labels.csv and .json")
    ap.add_argument("--hard-threshold", type=float, default=None,
                    help="one-hot labels where the top class reaches this probability")
    ap.add_argument("--split", choices=("test", "train"), default="test",
                    help="the file to score: test.csv (default) or train.csv (teacher files)")
    ap.add_argument("--per-fold", action="store_true",
                    help="k-fold runs: one output per fold (OUT_DIR/fold_k/) from the fold-k "
                         "models, for a student's '{fold}' files")
    ap.add_argument("--chunk-rows", type=row_count, default=CHUNK_ROWS,
                    help=f"rows read and scored at a time (default {CHUNK_ROWS})")
    ap.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                    help="a scoring setting for every model (devices, token_budget, max_length, "
                         "dtype), repeatable")
    args = ap.parse_args(argv)
    run = pseudo_label_per_fold if args.per_fold else pseudo_label
    done = run(args.model_dir, args.data_dir, args.out_dir, args.hard_threshold, args.split,
               args.chunk_rows, **parse_params(args.param))
    for record in done if args.per_fold else [done]:
        where = Path(record["models"][0]["model_dir"]).name if args.per_fold else ""
        print(f"{record['rows']} rows labelled ({record['one_hot_rows']} one-hot) by "
              f"{len(args.model_dir)} model(s) -> "
              f"{Path(args.out_dir) / where / PSEUDO_LABELS}; never saw "
              f"{_count(record['never_saw'])} labelled row(s)")
    return 0


def _count(ids: list | None) -> str:
    return "unknown" if ids is None else str(len(ids))
