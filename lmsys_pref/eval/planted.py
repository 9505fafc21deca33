"""A planted-signal task: does a pipeline learn anything at all?

Real arena rows are hard (a model near ln 3 on a small run may simply have too little data), so
a researcher checking the pipeline wants a task whose answer is certain: the preferred answer is
the one that opens (or, `at="end"`, closes) with a fixed marker phrase; both or neither holding
it is a tie. The texts are real arena rows, so lengths and vocabulary stay realistic; only the
markers and the labels are planted. A model that learns it must read both answers (the marker's
position in the input) and map A/B to the right columns, so a swapped label mapping or a wrong
TTA mapping fails it as surely as a head that passes no gradient.

Put the marker where the preset's truncation keeps text: `start` for `truncation_side: right`
(gemma3-270m, minilm), `end` for `left` (smollm2-135m, llama3-8b keep the end of each answer, so
an opening marker is cut off every long answer: SmolLM2 scored 0.519 on a `start` task).

`make` writes a competition-layout folder (train.csv, test.csv without labels, answers.csv with
the test labels, sample_submission.csv); `score` compares a submission with answers.csv.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from .. import data, runs
from ..configs import load_preset
from ..configs.tasks import LMSYS_2024, TASKS, Task
from ..data import metrics, writer
from ..files import atomic
from ..runs import submission as submission_file

MARKER = "Zebra lantern verdict:"  # a phrase no arena answer opens with
# (marker on A, marker on B) per class: a wins, b wins, tie (both), tie (neither)
PLANTS = {0: (True, False), 1: (False, True), 2: (True, True), 3: (False, False)}
ANSWERS = "answers.csv"
PLACES = ("start", "end")  # the marker opens the first turn, or closes the last

_LM_RUN = {"max_length": 96, "epochs": 2, "batch_size": 8, "grad_accum": 1,
           "untuned_baseline": "false"}  # 104 steps on 512 rows, at the preset's learning rate
# Each offline preset's small run on the 512/160 task: preset -> (baseline, `-p` settings); the
# marker goes where its truncation keeps text (`place_for`). The demo's budget (8 LoRA steps at
# 64 rows, ~13 per MiniLM fold) is too few steps to read which side holds the marker: these are
# 13x (LMs) and 6x (MiniLM, 78 steps) of it. The presets' keep_best stands aside here (62
# choosing rows of 410, under `train.best.MIN_STOP_ROWS`): when it did not, MiniLM's 66 steps
# on the other 348 ended at 0.519 unseen accuracy. Shared by the slow test,
# `benchmarks/bench_planted.py` and the README.
SMALL_RUNS = {
    "minilm": ("roberta", {"n_folds": 0, "max_length": 128, "epochs": 3,
                           "learning_rate": 0.0003, "batch_size": 16,
                           "untuned_baseline": "false"}),
    "gemma3-270m": ("gemma", _LM_RUN),
    "smollm2-135m": ("llama", _LM_RUN),
}


def place_for(preset: str) -> str:
    """Where `preset`'s truncation keeps a marker: `end` when it cuts from the left (keeping
    the end of each answer), else `start` (LMConfig's default truncation_side is right)."""
    return "end" if load_preset(preset).get("truncation_side") == "left" else "start"


def params(settings: dict) -> list[str]:
    """`-p key value` arguments for the `lmsys-pref train` door."""
    return [a for k, v in settings.items() for a in ("-p", k, str(v))]


def _marked(cell: str, marker: str, on: bool, at: str = "start") -> str:
    """The JSON turn list `cell` with `marker` opening its first turn (or closing its last,
    `at="end"`) when `on`."""
    try:
        turns = json.loads(cell) if isinstance(cell, str) and cell.strip() else []
    except ValueError:  # an undecodable cell (the sample's quirks): its text as one turn
        turns = [cell]
    turns = [t if isinstance(t, str) else "" for t in (turns if isinstance(turns, list) else [])]
    turns = turns or [""]
    if on and at == "start":
        turns[0] = f"{marker} {turns[0]}"
    elif on:
        turns[-1] = f"{turns[-1]} {marker}"
    return json.dumps(turns)  # ASCII escapes: lone surrogates stay as the files spell them


def plant(rows: pd.DataFrame, marker: str = MARKER, seed: int = 0,
          at: str = "start", ties: bool = True) -> pd.DataFrame:
    """`rows` (competition layout, raw cells) with the answers' markers and labels planted.

    Classes are drawn evenly from the four kinds in `PLANTS` (so ties are about half: both and
    neither), or without `ties` from a and b only (a two-class task), seeded. Ids, prompts and
    every other column are kept as they are. `at`: one of `PLACES`.
    """
    if at not in PLACES:
        raise ValueError(f"planted: at {at!r}; expected one of {PLACES}")
    kinds = np.random.default_rng(seed).integers(0, len(PLANTS) if ties else 2, len(rows))
    out = rows.copy()
    for col, side in (("response_a", 0), ("response_b", 1)):
        out[col] = [_marked(cell, marker, PLANTS[k][side], at) for cell, k in zip(rows[col], kinds)]
    label = np.minimum(kinds, 2)  # both kinds of tie are the tie class
    onehot = data.onehot(label)
    for j, col in enumerate(data.LABEL_COLS):
        out[col] = onehot[:, j].astype(int)
    return out


def make(src_dir: str | Path, out_dir: str | Path, n_train: int = 512, n_test: int = 160,
         marker: str = MARKER, seed: int = 0, at: str = "start",
         task: Task = LMSYS_2024) -> Path:
    """Write a planted task built from `src_dir/train.csv` into `out_dir`, in `task`'s format
    (a two-class task's rows plant no ties).

    Args:
        src_dir: a competition folder (its train.csv supplies the texts).
        out_dir: gets train.csv, test.csv (unlabelled), answers.csv, sample_submission.csv.
        n_train, n_test: rows of each; together at most the source's rows.
        marker: the phrase that marks the preferred answer.
        seed: which rows go where and which answers are marked.
        at: `start` (the marker opens an answer) or `end` (it closes one): where the preset's
            `truncation_side` keeps text (right keeps the start, left the end).
        task: the data folder's format (`configs.tasks`).
    """
    src = data.read_table(data.find_file(src_dir, "train"))
    if n_train < 1 or n_test < 1 or n_train + n_test > len(src):
        raise ValueError(f"planted: n_train {n_train} + n_test {n_test} must be >= 1 each and "
                         f"fit the {len(src)} rows of {src_dir}/train.csv")
    picked = src.iloc[np.random.default_rng(seed).permutation(len(src))[:n_train + n_test]]
    rows = plant(picked.reset_index(drop=True), marker, seed, at, ties=task.n_classes > 2)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    test = rows.iloc[n_train:]
    atomic.write_text(out / "train.csv", rows.iloc[:n_train].to_csv(index=False))
    atomic.write_text(out / "test.csv", test[list(data.TEST_COLS)].to_csv(index=False))
    atomic.write_text(out / ANSWERS, test[["id", *data.LABEL_COLS]].to_csv(index=False))
    sample = test[["id"]].assign(**{c: 1 / 3 for c in data.LABEL_COLS})
    atomic.write_text(out / "sample_submission.csv", sample.to_csv(index=False))
    if task is not LMSYS_2024 and task.n_classes == 2:
        _as_task(out, task)
    return out


def _as_task(out: Path, task: Task) -> None:
    """The planted folder (written in the 2024 format) rewritten in `task`'s: its files, and
    answers.csv with the task's classes."""
    train = data.load_split(out / "train.csv", labelled=True, lenient=True)
    test = data.load_split(out / "test.csv", labelled=False, lenient=True)
    answers = runs.read_probs(out / ANSWERS)
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        (out / name).unlink()
    writer.write_folder(train, test, out, task)
    atomic.write_text(out / ANSWERS, answers[["id", *task.prob_columns]].to_csv(index=False))


def score(answers: str | Path, submission: str | Path) -> dict:
    """Accuracy and log loss of `submission` against the planted `answers`.

    Raises:
        SubmissionError: the submission is not exactly the planted test ids, in order, with
            valid probabilities (`submission_file.read`, naming the file).
    """
    truth = runs.read_probs(answers)
    labels = truth[list(data.prob_columns(truth))].to_numpy().argmax(1)
    sub = submission_file.read(submission, truth["id"])
    if "winner" in sub.columns:  # a task scored on labels: accuracy only
        guess = sub["winner"].map({"model_a": 0, "model_b": 1}).to_numpy()
        return {"rows": len(truth), "accuracy": float((guess == labels).mean()),
                "log_loss": None}
    probs = sub[list(data.prob_columns(sub))].to_numpy(float)
    return {"rows": len(truth), "accuracy": metrics.accuracy(labels, probs),
            "log_loss": metrics.log_loss(labels, probs)}


def cli_main(argv: list[str] | None = None) -> int:
    """`lmsys-pref planted make --data-dir SRC --out-dir D` / `planted score --data-dir D
    --submission S`."""
    ap = argparse.ArgumentParser(prog="lmsys-pref planted", description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("make", "score"))
    ap.add_argument("--data-dir", required=True, help="make: source rows; score: planted folder")
    ap.add_argument("--out-dir", help="make: the planted folder to write")
    ap.add_argument("--submission", help="score: a submission.csv of the planted test rows")
    ap.add_argument("--n-train", type=int, default=512)
    ap.add_argument("--n-test", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--task", choices=sorted(TASKS), default=LMSYS_2024.name,
                    help="make: the folder's format (wsdm-2025: parquet, winner, no ties)")
    ap.add_argument("--at", choices=PLACES, default="start",
                    help="make: the marker opens (start) or closes (end) an answer; end for "
                         "presets with truncation_side left (smollm2-135m, llama3-8b)")
    args = ap.parse_args(argv)
    if args.action == "make":
        if not args.out_dir:
            ap.error("make needs --out-dir")
        out = make(args.data_dir, args.out_dir, args.n_train, args.n_test, seed=args.seed,
                   at=args.at, task=TASKS[args.task])
        print(f"planted task: {args.n_train} train + {args.n_test} test rows, marker at the "
              f"{args.at} -> {out}")
        return 0
    if not args.submission:
        ap.error("score needs --submission")
    res = score(Path(args.data_dir) / ANSWERS, args.submission)
    loss = "" if res["log_loss"] is None else f", log loss {res['log_loss']:.4f}"
    print(f"planted: {res['rows']} rows, accuracy {res['accuracy']:.3f}{loss}")
    return 0
