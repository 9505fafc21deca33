"""A run folder: what every baseline writes and every reader reads (`contract`: metrics.json's
vocabulary, oof.csv/val.csv, model/ metadata), OUT_DIR itself (`outdir`: one run at a time,
never an input, no stale outputs), the submission (`submission`), resume and content
fingerprints (`resume`) and the post-rules saved with a model (`postrules`). Torch-free.

This face gives the names other layers use (`runs.read_metrics`, `runs.prepare_out_dir`, ...);
the modules inside the package import each other directly, never through it.
"""
from ..files.jsonio import load_json, save_json
from .contract import (
    EVAL_FILES,
    HELD_OUT,
    METRIC_KEYS,
    MODEL_META,
    OPTIONAL_METRIC_KEYS,
    Predictor,
    check_metrics,
    probs_frame,
    read_metrics,
    read_model_meta,
    read_probs,
    read_test_probs,
    resolve_model_dir,
    run_metrics,
    write_model_meta,
    write_outputs,
    write_test_probs,
)
from .outdir import (
    COMPLETE_MARKS,
    EXECUTING_ENV,
    FAILED,
    PREVIOUS,
    REPORT_FIGURES,
    RUN_OUTPUTS,
    check_out_dir,
    holding,
    holds_out_dir,
    prepare_out_dir,
)

__all__ = ["COMPLETE_MARKS", "EVAL_FILES", "EXECUTING_ENV", "FAILED", "HELD_OUT", "METRIC_KEYS",
           "MODEL_META", "OPTIONAL_METRIC_KEYS", "PREVIOUS", "Predictor", "REPORT_FIGURES",
           "RUN_OUTPUTS", "check_metrics", "check_out_dir", "holding", "holds_out_dir",
           "load_json", "prepare_out_dir", "probs_frame", "read_metrics", "read_model_meta",
           "read_probs", "read_test_probs", "resolve_model_dir", "run_metrics", "save_json",
           "write_model_meta", "write_outputs", "write_test_probs"]
