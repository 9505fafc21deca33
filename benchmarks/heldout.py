"""The benches' split of the 1,500 real rows: 1,200 to train on, 300 held out (prompt-grouped,
seed 42), written as a competition folder whose test.csv has no labels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_pref import data
from lmsys_pref.data import splits
from lmsys_pref.eval import planted


def write_real_split(shared: Path, folder: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """train.csv, test.csv (no labels) and answers.csv (the held-out labels) in `folder`; the
    loaded rows and the held-out positions among them."""
    df = data.load_split(Path(shared) / "train.csv", lenient=True)
    raw = pd.read_csv(Path(shared) / "train.csv")
    tr, va = splits.holdout(df["label"].to_numpy(), 0.2, 42,
                            groups=splits.fold_groups(df, "prompt"))
    folder.mkdir(parents=True, exist_ok=True)
    raw.iloc[tr].to_csv(folder / "train.csv", index=False)
    raw.iloc[va].drop(columns=list(data.LABEL_COLS) + ["model_a", "model_b"]).to_csv(
        folder / "test.csv", index=False)
    raw.iloc[va][["id", *data.LABEL_COLS]].to_csv(folder / planted.ANSWERS, index=False)
    return df, va
