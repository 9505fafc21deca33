"""The labelled and unlabelled rows: loading and validating a split (`frames`), turn lists
(`turns`), holdout and folds (`splits`), soft labels and extra rows (`labels`), teacher files
(`teachers`) and the scores of predictions (`metrics`). Torch-free.

This face gives the names other layers use (`data.load_split`, `data.swap`, ...); the modules
inside the package import each other directly, never through it.
"""
from ..files.tables import LABEL_COLS, TEXT_COLS, DataError, check_ids, read_table
from .frames import (
    CLASS_NAMES,
    SWAP_PAIRS,
    TEST_COLS,
    TRAIN_COLS,
    TTA_MODES,
    augment_with_swap,
    check_n_folds,
    check_tta,
    combine_swapped,
    find_file,
    join_turns,
    load_competition,
    load_split,
    onehot,
    prob_columns,
    swap,
    tile,
)
from .turns import clean_text, decode_turns, even_turns

__all__ = ["CLASS_NAMES", "LABEL_COLS", "SWAP_PAIRS", "TEST_COLS", "TEXT_COLS", "TRAIN_COLS",
           "TTA_MODES", "DataError", "augment_with_swap", "check_ids", "check_n_folds",
           "check_tta", "clean_text", "combine_swapped", "decode_turns", "even_turns",
           "find_file", "join_turns", "load_competition", "load_split", "onehot",
           "prob_columns", "read_table", "swap", "tile"]
