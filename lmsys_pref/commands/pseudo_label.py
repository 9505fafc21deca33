"""`lmsys-pref pseudo-label` (`make pseudo-label`): soft labels for unlabelled rows from runs.

    lmsys-pref pseudo-label --model-dir M [--model-dir M2 ...] --data-dir D --out-dir O
                            [--hard-threshold p] [--split test|train] [--chunk-rows N] [-p k v]

Streams D/test.csv (or .parquet; `--split train` scores train.csv) in chunks of `--chunk-rows`,
so a file of any size fits in memory; each chunk is checked like `data.load_split` (ids, JSON
turn lists), scored by every model with swap TTA (`infer.loaders.load_predictor`: XGBoost or
transformer runs, k-fold runs as their folds' mean) and the models are averaged. Writes:

  O/pseudo_labels.csv   the file's own columns as they are (ids kept verbatim) + the three
                        winner columns: the averaged probabilities (soft labels), or one-hot
                        where the top class reaches `--hard-threshold`; a labelled file for
                        `-p extra_train` (with `-p soft_labels true`) or `-p teachers`
  O/pseudo_labels.json  which models made it, the settings, row counts, and `never_saw`: the
                        labelled ids none of the models trained on where their runs tell
                        (a fold's held_out.json, a holdout run's val.csv; XGBoost: none), so
                        a student can check a teacher file for leaks (`lmsys_pref.data.teachers`)

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
from ..data.teachers import PSEUDO_LABELS, PSEUDO_META
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


def decode(raw: pd.DataFrame, name: str, seen: set[str]) -> pd.DataFrame:
    """One chunk checked and decoded as `data.load_split` does (text columns as turn lists).

    Raises:
        DataError: a missing column, a bad or repeated id (across chunks too), a cell that is
            not a JSON list; naming the file, the row id and the column.
    """
    missing = [c for c in TEST_COLS if c not in raw.columns]
    if missing:
        raise DataError(f"{name}: missing column(s) {missing}; found {list(raw.columns)[:12]}")
    df = raw[list(TEST_COLS)].reset_index(drop=True)
    df["id"] = data.check_ids(df, name)
    again = df["id"][df["id"].isin(seen)]
    if len(again):
        raise DataError(f"{name}: duplicate id(s) {again.head(5).tolist()} in column 'id'")
    seen.update(df["id"])
    for col in TEXT_COLS:
        df[col] = pd.Series([data.decode_turns(v, where=f"{name}: row id {rid}, column '{col}'")
                             for rid, v in zip(df["id"], df[col])], dtype=object)
    return df


def never_saw(model_dir: str | Path) -> list[str] | None:
    """The labelled ids a saved model never trained on, where its run tells; None otherwise.

    A fold of a k-fold run (model/fold_k): its held_out.json entry; a whole k-fold run: the ids
    no averaged fold trained on; a holdout run: its val.csv; XGBoost: none (the final booster
    fits every labelled row).
    """
    m = runs.resolve_model_dir(model_dir)
    if (m.parent / runs.HELD_OUT).is_file() and m.name in runs.load_json(m.parent / runs.HELD_OUT):
        return [str(i) for i in runs.load_json(m.parent / runs.HELD_OUT)[m.name]]
    meta = runs.read_model_meta(m)
    if (m / runs.HELD_OUT).is_file():
        held = runs.load_json(m / runs.HELD_OUT)
        sets = [set(map(str, held[f])) for f in meta.get("folds", [])]
        return sorted(set.intersection(*sets)) if sets else None
    if meta.get("kind") == "xgb":
        return []
    val = m.parent / "val.csv"
    return runs.read_probs(val)["id"].astype(str).tolist() if val.is_file() else None


def labels_of(probs: np.ndarray, hard_threshold: float | None) -> np.ndarray:
    """Soft labels, one-hot where the top class reaches `hard_threshold`; rows sum to 1."""
    p = np.asarray(probs, dtype=np.float64)
    p = p / p.sum(1, keepdims=True)
    if hard_threshold is not None:
        sure = p.max(1) >= hard_threshold
        p[sure] = np.eye(3)[p[sure].argmax(1)]
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
    if hard_threshold is not None and not 0 < hard_threshold <= 1:
        raise ValueError(f"--hard-threshold {hard_threshold}: expected a probability in (0, 1]")
    if chunk_rows < 1:  # pandas would say it in its own words, after the models loaded
        raise ValueError(f"--chunk-rows {chunk_rows}: expected at least 1 row per chunk")
    t0 = time.time()
    src = data.find_file(data_dir, split)
    out = runs.prepare_out_dir(out_dir, (PSEUDO_LABELS, PSEUDO_META))
    models = [(m, load_predictor(m, **overrides)) for m in model_dirs]  # bad folder: at once
    seen: set[str] = set()
    rows = n_hard = 0
    with atomic.atomic_path(out / PSEUDO_LABELS) as tmp:
        for raw in chunks(src, chunk_rows):
            if raw.empty:
                continue
            df = decode(raw, str(src), seen)
            probs = np.mean([p.predict_proba(df, tta="swap") for _, p in models], axis=0)
            lab = labels_of(probs, hard_threshold)
            keep = raw.drop(columns=[c for c in (*LABEL_COLS, "label") if c in raw.columns])
            keep.assign(**dict(zip(LABEL_COLS, lab.T))).to_csv(tmp, mode="a", header=not rows,
                                                               index=False)
            rows, n_hard = rows + len(df), n_hard + int((lab.max(1) == 1).sum())
            log.info("pseudo-label: %d rows scored", rows)
        if not rows:
            raise DataError(f"{src}: no data rows (only a header)")
    sights = [never_saw(m) for m in model_dirs]
    never = None if any(s is None for s in sights) else sorted(
        set.intersection(*(set(s) for s in sights)))
    record = {"models": [{"model_dir": str(m), "kind": runs.read_model_meta(m)["kind"],
                          "never_saw_rows": None if s is None else len(s)}
                         for m, s in zip(model_dirs, sights)],
              "source": str(src), "split": split, "tta": "swap", "hard_threshold": hard_threshold,
              "rows": rows, "one_hot_rows": n_hard, "seconds": round(time.time() - t0, 2),
              "never_saw": never}
    runs.save_json(out / PSEUDO_META, record)
    return record


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
    ap.add_argument("--chunk-rows", type=row_count, default=CHUNK_ROWS,
                    help=f"rows read and scored at a time (default {CHUNK_ROWS})")
    ap.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                    help="a scoring setting for every model (devices, token_budget, max_length, "
                         "dtype), repeatable")
    args = ap.parse_args(argv)
    record = pseudo_label(args.model_dir, args.data_dir, args.out_dir, args.hard_threshold,
                          args.split, args.chunk_rows, **parse_params(args.param))
    print(f"{record['rows']} rows labelled ({record['one_hot_rows']} one-hot) by "
          f"{len(args.model_dir)} model(s) -> {Path(args.out_dir) / PSEUDO_LABELS}")
    return 0
