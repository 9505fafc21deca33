"""Where the labels and probabilities a run trains on came from, and whether its held-out figures
stay honest (metrics.json `cv_honest`, `cv_leaks`). Torch-free.

A run's OOF (or holdout) log loss is honest only if no training target of a split came from a
model that trained on that split's held-out rows. Three inputs can carry such targets:
 - `teachers` (`data.teachers`: a run's oof.csv saw every held-out row through its other folds);
 - `extra_train` files: pseudo-labels made by models that trained on held-out rows (the final
   model of a k-fold run saw them all);
 - a soft-labelled train.csv: its soft rows are model outputs.
What the models behind a file trained on is read from the pseudo-label record beside it
(`<stem>.json` holding `never_saw`: `pseudo-label` writes it as pseudo_labels.json, so a copy
named train.csv says it with a train.json). A one-hot file without a record counts as human
labels (the Arena's 33k rows); a soft one without a record is of unknown provenance, which is
reported as a leak ("provenance unknown"): an honest CV is one that can be shown to be.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from ..files.jsonio import load_json
from ..files.tables import DataError

RECORD_KEY = "never_saw"  # what makes a .json beside a file a pseudo-label record

WHY = {
    "saw": "an oof.csv: each row's probabilities came from a fold model that trained on the "
           "other folds, this run's held-out rows among them",
    "never_saw": "its models trained on {n} of this run's held-out rows (the record's "
                 "`never_saw`; e.g. a final model fitted on every labelled row)",
    "unknown": "provenance unknown: no record of the rows its models trained on (pseudo-label "
               "outputs keep one in their .json), so its held-out honesty cannot be checked",
    "upstream": "its models' own runs were not cv-honest ({models}): their outputs carry what "
                "those runs' leaky inputs saw",
}


def record_of(path: str | Path) -> dict | None:
    """The pseudo-label record of a file (`<stem>.json` beside it, holding `never_saw`), or None.
    """
    meta = Path(path).with_suffix(".json")
    if not meta.is_file():
        return None
    record = load_json(meta)
    return record if isinstance(record, dict) and RECORD_KEY in record else None


def unlabelled_test_rows(path: str | Path) -> bool:
    """Whether a file is a pseudo-label output of a test file: unlabelled rows labelled by models
    (its record's `split` is 'test'), so its rows may repeat the run's own test rows."""
    record = record_of(path)
    return record is not None and record.get("split") == "test"


@dataclasses.dataclass(frozen=True)
class Source:
    """What the models behind a file's labels or probabilities trained on.

    kind: 'saw' (they trained on every id of `ids`: a run's oof.csv), 'never_saw' (they trained
    on the labelled rows except `ids`: a pseudo-label record, a holdout run's val.csv),
    'labels' (human labels: no model), 'unknown', or 'upstream' (the record names models whose
    own runs were not cv-honest).
    """

    kind: str
    ids: frozenset = frozenset()
    models: tuple = ()

    def leaked(self, held_out: Sequence) -> int | None:
        """How many `held_out` ids the models behind the file trained on (None: unknown)."""
        if self.kind == "labels":
            return 0
        if self.kind not in ("saw", "never_saw"):
            return None
        held = set(map(str, held_out))
        return len(held & self.ids) if self.kind == "saw" else len(held - self.ids)

    def why(self, leaked: int | None) -> str:
        """One line saying why the file makes the held-out figures dishonest."""
        return WHY[self.kind].format(n=leaked, models=", ".join(self.models))


def from_record(record: dict) -> Source:
    """The `Source` a pseudo-label record describes (`never_saw`, and each model's
    `trained_on.run_cv_honest`)."""
    leaky = tuple(str(m.get("model_dir")) for m in record.get("models", [])
                  if (m.get("trained_on") or {}).get("run_cv_honest") is False)
    if leaky:
        return Source("upstream", models=leaky)
    never = record.get(RECORD_KEY)
    return Source("unknown") if never is None else Source("never_saw", frozenset(map(str, never)))


def of_labels(path: str | Path, one_hot: bool) -> Source:
    """The source of a labelled file's labels (an `extra_train` file, a soft train.csv): its
    record, else human labels when every row is one-hot, else unknown."""
    record = record_of(path)
    if record is not None:
        return from_record(record)
    return Source("labels") if one_hot else Source("unknown")


def leak_entry(input_kind: str, file: str, source: Source, leaked: int | None,
               note: str = "") -> dict:
    """One entry of metrics.json's `cv_leaks`."""
    return {"input": input_kind, "file": str(file), "leaked_rows": leaked,
            "provenance": source.kind, "why": source.why(leaked) + note}


def check_fold_file(input_kind: str, path: str | Path, fold: int, source: Source,
                    held_out: Sequence) -> int | None:
    """A per-fold file's leak into its fold; one whose models trained on held-out rows of that
    fold is refused (its folds do not match the run's).

    Raises:
        DataError: naming the file, the fold and the rows.
    """
    leaked = source.leaked(held_out)
    if leaked:
        raise DataError(f"{input_kind} {path} (fold {fold}): its models trained on {leaked} of "
                        f"this fold's {len(held_out)} held-out rows; the {input_kind}'s folds "
                        "must match this run's (same rows, n_folds, seed, group_by)")
    return leaked


def total_leak(source: Source, held_outs: Sequence[Sequence]) -> int | None:
    """Held-out rows the models behind a file trained on, summed over the splits (None:
    unknown)."""
    counts = [source.leaked(held) for held in held_outs]
    if source.kind not in ("saw", "never_saw", "labels"):
        return None
    return int(sum(c or 0 for c in counts))


def input_leaks(sources: Sequence[tuple[str, str, int | None, Source]], soft: np.ndarray,
                train_pos: Sequence[np.ndarray], held_outs: Sequence[Sequence]) -> list[dict]:
    """The `cv_leaks` entries of a run's label files, one per input spec.

    Args:
        sources: (input, spec, fold or None, source): an `extra_train` file (fold None: used by
            every split; else fold k's file), or the soft labels of train.csv.
        soft: which train rows are soft-labelled.
        train_pos, held_outs: each split's training positions and held-out ids.

    Raises:
        DataError: a per-fold file whose models trained on its fold's held-out rows.
    """
    found: dict[tuple[str, str], tuple[Source, int | None, str]] = {}
    for kind, spec, fold, src in sources:
        note = ""
        if kind != "extra_train":  # a soft train.csv: the splits that train on soft rows
            held = [h for tr, h in zip(train_pos, held_outs) if soft[tr].any()]
            leak, note = total_leak(src, held), f" ({int(soft.sum())} soft-labelled row(s))"
        elif fold is None:
            leak = total_leak(src, held_outs)
        else:
            leak = 0 if fold >= len(held_outs) else check_fold_file(kind, spec, fold, src,
                                                                    held_outs[fold])
            before = found.get((kind, spec), (src, 0, ""))[1]
            leak = None if leak is None or before is None else leak + before
        found[kind, spec] = (src, leak, note)
    return [leak_entry(kind, spec, src, leak, note)
            for (kind, spec), (src, leak, note) in found.items() if leak is None or leak]


def honesty(entries: Sequence[dict]) -> dict:
    """metrics.json's `cv_honest` and `cv_leaks` from the leak entries of a run's inputs."""
    return {"cv_honest": not entries, "cv_leaks": list(entries)}
