"""The run-folder contract shared by every baseline.

OUT_DIR/
  submission.csv   id + three probabilities, the test ids in test order
  metrics.json     the scores of the run in one vocabulary (`METRIC_KEYS`, built by `run_metrics`):
                   log_loss, accuracy, ece, eval ('oof' or 'val'), n_train, n_test, seconds, ...
  oof.csv|val.csv  id + label + three probabilities of the rows metrics.json scored
                   (`EVAL_FILES[metrics["eval"]]`)
  model/           all `predict` needs; model/lmsys_pref.json names the kind and config

Ids are written and read as text (`files.tables.as_id_text`, `read_csv`): a run's files carry
the data's id strings exactly. OUT_DIR itself (one run at a time, never an input, no stale
outputs) is `runs.outdir`'s.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import pandas as pd

from ..data import metrics as scores
from ..files.atomic import atomic_path
from ..files.jsonio import load_json, save_json
from ..files.tables import LABEL_COLS, DataError, as_id_text, read_csv
from ..configs.tasks import LMSYS_2024, Task
from . import submission

log = logging.getLogger("lmsys_pref")
MODEL_META = "lmsys_pref.json"
HELD_OUT = "held_out.json"  # a k-fold run's model/: fold -> the ids it never saw
TEST_PROBS = "test_probs.csv"  # the test probabilities where the submission holds labels

# metrics.json: one vocabulary for every baseline (xgb, train.fit) and every reader (grid,
# notebook_view, report, benchmarks). `run_metrics` builds it; `check_metrics` enforces it.
METRIC_KEYS = {
    "log_loss": "multi-class log loss of the scored rows (the competition metric)",
    "accuracy": "share of scored rows whose most probable class is the label",
    "ece": "expected calibration error of the top-class probability (10 bins)",
    "eval": "which rows were scored: 'oof' (k-fold, every labelled row), 'val' (a holdout) or "
            "null (none: XGBoost with n_folds <= 1; the three scores are null too)",
    "n_train": "labelled rows the run used (a holdout run trains on n_train - n_eval of them)",
    "n_test": "test rows scored into submission.csv (0 without a test file)",
    "seconds": "wall time of the whole run",
}
OPTIONAL_METRIC_KEYS = {
    "n_eval": "rows scored (the holdout's size; n_train for OOF)",
    "n_folds": "folds of a k-fold run",
    "fold_log_losses": "log loss of each fold's held-out rows",
    "best_fold": "the fold whose model is saved in model/ (k-fold transformer runs)",
    "fold_rounds": "boosting rounds each fold stopped at (XGBoost)",
    "steps": "optimizer steps, all folds together",
    "untuned_log_loss": "log loss of the same rows before fine-tuning (base model + fresh head)",
    "best_step": "the checkpoint a `keep_best` run ended on (the last fold's, k-fold)",
    "ends_at": "what a `keep_best` run ended on, chosen on its choosing rows: 'checkpoint', "
               "'start' (no checkpoint beat the untrained start) or 'uniform' (nothing beat "
               "a zeroed output layer: 1 / n each); k-fold: the last fold's",
    "train_loss_first": "first logged training loss",
    "train_loss_last": "last logged training loss",
    "model_id": "the checkpoint that was fine-tuned",
    "init_from": "the trained run this one started from (`init_from`): its folder, the tensors "
                 "loaded and the head rows kept",
    "task": "the competition format the run used (lmsys_pref.configs.tasks: lmsys-2024, "
            "llm-classification-finetuning, wsdm-2025)",
    "metric": "the task's own score: 'log_loss' (lower is better) or 'accuracy' (higher)",
    "by_language": "log_loss, accuracy and rows of the scored rows per `language` (when the "
                   "data has that column)",
    "weights_dtype": "dtype the transformer's weights ran in (bf16, fp16, fp32; `dtype: auto`)",
    "attn_implementation": "attention kernel the transformer ran with (`attn_implementation`)",
    "n_shared_rows": "rows every blended run scored: the blend's weights are fitted on them",
    "blend_weights": "weight of each blended run folder (`lmsys_pref.eval.blend`)",
    "soft_log_loss": "cross-entropy of the scored soft-labelled rows against their soft labels "
                     "(`soft_labels`; the headline scores only the one-hot rows)",
    "n_soft_eval": "scored rows with soft labels (in `soft_log_loss`, not in the headline)",
    "extra_train": "extra training rows (`extra_train`): per file rows/used/dropped, the rows "
                   "used, and the dropped ones (repeating a train/test conversation) by id",
    "teachers": "distillation (`teachers`): temperature, loss weights, and per teacher its "
                "files, provenance and `leaked_rows` (held-out rows its models trained on)",
    "cv_honest": "whether the scored rows' figures are honest: true when no input the run "
                 "trained on (teachers, extra_train files, soft labels of train.csv) came from "
                 "models that trained on the held-out rows of a split and every such input's "
                 "provenance is known; false otherwise (`cv_leaks` says which)",
    "cv_leaks": "each input that makes cv_honest false: `input` (teachers, extra_train, soft "
                "labels of train.csv), `file`, `leaked_rows` (held-out rows its models trained "
                "on, all splits; null: provenance unknown), `provenance` and `why`; [] when "
                "honest (`data.provenance`)",
    "hard_labels": "'argmax' when no scored row is one-hot: the headline scored every row "
                   "against its soft label's most probable class (absent: the one-hot rows)",
}
EVAL_FILES = {"oof": "oof.csv", "val": "val.csv"}  # metrics["eval"] -> the scored rows' file


def run_metrics(labels: Sequence[int] | None, probs: np.ndarray | None, *, eval: str | None,
                n_train: int, n_test: int, seconds: float, **optional: Any) -> dict[str, Any]:
    """The metrics.json of a run: scores of the `eval` rows plus the run's sizes and time.

    Args:
        labels: class indices (0/1/2) of the scored rows; None when no row was scored.
        probs: their (n, 3) probabilities (the rows of oof.csv or val.csv), or None.
        eval: "oof" or "val", which rows were scored (None with `labels`).
        n_train, n_test, seconds: see `METRIC_KEYS`.
        **optional: keys of `OPTIONAL_METRIC_KEYS` (e.g. `n_folds=5`).

    Raises:
        ValueError: `eval` is not oof/val, or an optional key is not in the vocabulary.
    """
    m: dict[str, Any] = {"log_loss": None, "accuracy": None, "ece": None}
    if labels is not None:
        labels = np.asarray(labels, dtype=int)
        probs = np.asarray(probs, dtype=np.float64)
        m = {"log_loss": scores.log_loss(labels, probs),
             "accuracy": scores.accuracy(labels, probs),
             "ece": scores.calibration(labels, probs)["ece"]}
    m.update(eval=eval, n_train=int(n_train), n_test=int(n_test),
             seconds=round(float(seconds), 2), **optional)
    return check_metrics(m)


def check_metrics(m: dict[str, Any], where: str = "metrics") -> dict[str, Any]:
    """`m` when it speaks the vocabulary (every key of `METRIC_KEYS`, nothing unknown).

    Raises:
        ValueError: naming `where` and the missing or unknown keys, or a bad `eval`.
    """
    missing = [k for k in METRIC_KEYS if k not in m]
    unknown = sorted(set(m) - set(METRIC_KEYS) - set(OPTIONAL_METRIC_KEYS))
    if missing or unknown:
        raise ValueError(f"{where}: missing key(s) {missing}, unknown key(s) {unknown}; "
                         "the vocabulary is lmsys_pref.runs.METRIC_KEYS (+ OPTIONAL_METRIC_KEYS)")
    if m["eval"] not in EVAL_FILES and (m["eval"], m["log_loss"]) != (None, None):
        raise ValueError(f"{where}: 'eval' is {m['eval']!r}, expected one of {sorted(EVAL_FILES)}"
                         " (or null when no row was scored)")
    return m


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's metrics.json, checked against the vocabulary (`check_metrics`)."""
    path = Path(run_dir) / "metrics.json"
    return check_metrics(load_json(path), str(path))


def probs_frame(ids: Sequence, probs: np.ndarray, labels: Sequence[int] | None = None
                ) -> pd.DataFrame:
    """id (as text, `tables.as_id_text`) (+ label) + one probability column per class
    (winner_model_a, winner_model_b and, with three classes, winner_tie)."""
    probs = np.asarray(probs, dtype=np.float64)
    df = pd.DataFrame(probs, columns=list(LABEL_COLS[: probs.shape[1]]))
    if labels is not None:
        df.insert(0, "label", np.asarray(labels, dtype=int))
    df.insert(0, "id", as_id_text(ids))
    return df


def read_probs(path: str | Path) -> pd.DataFrame:
    """Read an oof/val/submission file written by this module (ids as the file's text).

    Raises:
        FileNotFoundError / DataError: naming the file (missing, empty or not a CSV).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV ({str(err).strip()})") from None


def write_outputs(out_dir: str | Path, *, test_ids: Sequence[int] | None,
                  test_probs: np.ndarray | None, metrics: dict, oof: pd.DataFrame | None = None,
                  oof_name: str = "oof.csv", task: Task = LMSYS_2024) -> Path:
    """Write submission.csv (the task's format), metrics.json and oof.csv (or val.csv) into a
    run folder; when the task's submission holds labels, the test probabilities also go to
    test_probs.csv (blends, cascades and reports read probabilities: `read_test_probs`)."""
    out = Path(out_dir)
    if oof is not None:
        with atomic_path(out / oof_name) as tmp:
            oof.to_csv(tmp, index=False)
    save_json(out / "metrics.json", metrics)
    if test_ids is not None:  # last: a submission.csv means the whole run completed
        if task.submission == "labels":
            write_test_probs(out, test_ids, test_probs)
        submission.write(test_ids, test_probs, out / "submission.csv", task)
    return out


def write_test_probs(out_dir: str | Path, test_ids: Sequence, probs: np.ndarray) -> Path:
    """test_probs.csv: the test probabilities of a run whose submission holds labels."""
    path = Path(out_dir) / TEST_PROBS
    with atomic_path(path) as tmp:
        probs_frame(test_ids, probs).to_csv(tmp, index=False)
    return path


def read_test_probs(run_dir: str | Path) -> pd.DataFrame | None:
    """A run folder's test probabilities (id + one column per class): test_probs.csv where the
    task's submission holds labels, else submission.csv; None when the run scored no test."""
    for name in (TEST_PROBS, "submission.csv"):
        path = Path(run_dir) / name
        if path.is_file():
            sub = submission.read(path) if name == "submission.csv" else read_probs(path)
            return sub if LABEL_COLS[0] in sub.columns else None
    return None


@runtime_checkable
class Predictor(Protocol):
    """A saved model behind one interface, whatever its kind: what `infer.loaders.load_predictor`
    returns and every door (predict, bias, pseudo-label, blend inputs) scores with.

    Implemented by `xgb.XGBPredictor`, `infer.predictor.LMPredictor` (one model),
    `infer.predictor.FoldMean` (a k-fold run's folds averaged) and `infer.predictor.OutOfFold`
    (each labelled row through the fold that never saw it).
    """

    stats: dict[str, Any]
    """What the last call did (rows, seconds, tokens/s, ...): predict.json's figures."""

    def predict_proba(self, df: pd.DataFrame, tta: str | None = None) -> np.ndarray:
        """(n, k) class probabilities of `df`'s rows, in order; `tta` None = the saved
        setting."""


def write_model_meta(model_dir: str | Path, kind: str, config: dict, **extra: Any) -> Path:
    """Mark a folder as a saved model of `kind` so `predict.load_predictor` can find its loader."""
    return save_json(Path(model_dir) / MODEL_META, {"kind": kind, "config": config, **extra})


def read_model_meta(model_dir: str | Path) -> dict:
    """The metadata of a saved model; accepts a run folder or its model/ subfolder."""
    model_dir = resolve_model_dir(model_dir)
    return load_json(model_dir / MODEL_META)


def resolve_model_dir(path: str | Path) -> Path:
    """A run folder's model/ or the model folder itself."""
    path = Path(path)
    if (path / MODEL_META).exists():
        return path
    if (path / "model" / MODEL_META).exists():
        return path / "model"
    raise FileNotFoundError(f"{path}: no {MODEL_META} here or in {path / 'model'}; "
                            "is it the OUT_DIR of a train run?")
