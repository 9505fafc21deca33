"""`python -m lmsys_pref predict` / `make predict`: score test.csv with any saved model.

Writes OUT_DIR/submission.csv (the test ids in order; only once every row is scored, so a
failed run leaves no partial file) and OUT_DIR/predict.json (rows, tokens, seconds,
tokens_per_s, padding_efficiency, ...; `time_budget`: the projection; `adaptive`: the rows of
an adaptive swap pass and why it stopped; `cascade`: each stage's rows, weight and seconds).
A cascade (`-p cascade`, `make predict CASCADE=...`) runs in `infer.cascade`.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import data, runs
from ..configs import params_help, parse_params
from ..configs.predict import PredictConfig
from ..data.task import AUTO, Task, resolve, to_task
from ..infer import cascade  # torch-free, as the budget and the loaders
from ..infer.budget import Budget  # torch-free: the time budget of LM and encoder scoring
from ..infer.loaders import (  # noqa: F401 (the door's names)
    LOADERS,
    TRANSFORMER_KINDS,
    has_fold_models,
    load_predictor,
    tta_for,
)
from ..runs import postrules, resume, submission

log = logging.getLogger("lmsys_pref.predict")
PREDICT_OUTPUTS = ("submission.csv", "test_probs.csv", "predict.json")
CACHE_RECORD = "inputs.json"  # in cache_dir: what the cached scores were made from


def run_task(cfg: PredictConfig) -> Task:
    """The task this run writes for: `-p task`, else the one its data folder shows (a sample
    submission or a train file), else the saved model's own."""
    saved = runs.read_model_meta(cfg.model_dir)["config"].get("task", AUTO)
    return resolve(cfg.task, cfg.data_dir, default=resolve(saved, None))


def load_test(cfg: PredictConfig, task: Task | None = None) -> pd.DataFrame:
    """The test split of `cfg.data_dir` (test.csv or test.parquet), validated in the task's
    format (None: `run_task`'s)."""
    return data.load_split(data.find_file(cfg.data_dir, "test"), labelled=False,
                           task=task or run_task(cfg))


def load_model(cfg: PredictConfig, budget: Budget | None = None, **extra):
    """The saved model's predictor with this run's settings (devices, max_length, ...); a
    transformer's batches are watched by `budget` (None = a new one of `cfg.time_limit_h`)."""
    kind = runs.read_model_meta(cfg.model_dir)["kind"]
    overrides = {k: v for k, v in cfg.model_overrides().items() if k != "tta"}
    if kind in TRANSFORMER_KINDS:
        overrides.update(progress=cfg.progress, cache_dir=cfg.cache_dir,
                         budget=budget or Budget(cfg.time_limit_h),
                         tta_fraction=cfg.tta_fraction)
    return load_predictor(cfg.model_dir, **overrides, **extra), kind


def load_rules(cfg: PredictConfig) -> dict:
    """Post-rules saved with the model, else fitted on `data_dir/train.csv`."""
    model_dir = runs.resolve_model_dir(cfg.model_dir)
    if (model_dir / postrules.FILENAME).exists():
        return postrules.load(model_dir)
    train = data.find_file(cfg.data_dir, "train", required=False)
    if train is None:
        raise FileNotFoundError(f"post_rules: no {postrules.FILENAME} in {model_dir} and no "
                                f"train.csv in {cfg.data_dir} to learn them from")
    log.info("post_rules: learning them from %s", train)
    return postrules.fit(data.load_split(train, labelled=True))


def write_outputs(cfg: PredictConfig, test: pd.DataFrame, probs: np.ndarray, stats: dict,
                  extra: dict, task: Task | None = None) -> dict:
    """submission.csv in the task's format (atomically) and predict.json; returns the summary.
    A three-class model's probabilities are mapped to a two-class task (`task.to_task`)."""
    if cfg.post_rules:
        rules = load_rules(cfg)
        probs = postrules.apply(test, probs, rules)
        extra["post_rules_rows"] = postrules.count(test, rules)
    task = task or run_task(cfg)
    out, probs = Path(cfg.out_dir), to_task(probs, task)
    if task.submission == "labels":  # the probabilities too, for blends, cascades and plots
        runs.write_test_probs(out, test["id"].to_numpy(), probs)
    submission.write(test["id"].to_numpy(), probs, out / "submission.csv", task)  # atomic
    keys = ("rows", "tokens", "seconds", "tokens_per_s", "padding_efficiency")
    summary = {k: stats.get(k) for k in keys} | {"rows": len(test)} | extra
    summary |= {k: v for k, v in stats.items() if k not in summary}
    runs.save_json(out / "predict.json", summary)
    return summary


def check_cache(cfg: PredictConfig, test_path: Path) -> dict | None:
    """With `cache_dir`: record what its partial scores are made of (a content digest of the
    model folder and of the test file, and the scoring settings); when a rerun finds other
    inputs it says what changed and drops the stale scores before scoring again."""
    if not cfg.cache_dir:
        return None
    now = {"input model": resume.content_digest(runs.resolve_model_dir(cfg.model_dir), True),
           f"input {test_path.name}": resume.content_digest(test_path),
           **cfg.model_overrides()}
    record = Path(cfg.cache_dir) / CACHE_RECORD
    old = runs.load_json(record) if record.is_file() else None
    if old is not None and old != now:
        log.warning("%s: the cached scores are of other inputs (%s); scoring again",
                    cfg.cache_dir, "; ".join(resume.differing_fields(old, now)))
        for stale in Path(cfg.cache_dir).rglob("*.npz"):
            stale.unlink()
    runs.save_json(record, now)
    return now


@runs.holds_out_dir  # one run per OUT_DIR; never the model's run folder or DATA_DIR
def predict(cfg: PredictConfig) -> dict:
    """Score `cfg.data_dir`'s test split with `cfg.model_dir`; write the outputs.

    Returns:
        The predict.json summary.
    """
    t0 = time.perf_counter()  # the limit counts from here; the cascade's stages keep a share
    budget = Budget(cfg.time_limit_h, reserve_h=cascade.reserve_h(cfg.time_limit_h, cfg.stages))
    runs.prepare_out_dir(cfg.out_dir, PREDICT_OUTPUTS)  # no stale submission left looking current
    task = run_task(cfg)
    test = load_test(cfg, task)
    check_cache(cfg, data.find_file(cfg.data_dir, "test"))
    predictor, kind = load_model(cfg, budget)
    probs = predictor.predict_proba(test, tta=tta_for(kind, cfg.tta))
    stats = dict(getattr(predictor, "stats", {}) or {})
    extra = {"kind": kind, "model_dir": str(cfg.model_dir), "tta": cfg.tta, "task": task.name}
    if tta_for(kind, cfg.tta) != cfg.tta:
        extra["tta_scored"] = tta_for(kind, cfg.tta)  # XGBoost: adaptive is full swap
    if cfg.stages:  # the later models of a cascade, each on the rows least sure so far
        probs, extra["cascade"] = cascade.run(cfg, test, probs, budget,
                                              time.perf_counter() - t0)
    extra["total_seconds"] = time.perf_counter() - t0
    if kind in TRANSFORMER_KINDS:
        extra["time_budget"] = budget.summary()
    summary = write_outputs(cfg, test, probs, stats, extra, task)
    log.info("predict: %d rows -> %s", len(test), Path(cfg.out_dir) / "submission.csv")
    return summary


def parse_args(argv: list[str] | None, prog: str = "lmsys_pref predict") -> PredictConfig:
    """`--model-dir M --data-dir D --out-dir O [-p key value ...]` to a `PredictConfig`."""
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                 epilog=params_help(PredictConfig),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True, help="OUT_DIR of a train run, or its model/")
    ap.add_argument("--data-dir", required=True, help="folder with test.csv")
    ap.add_argument("--out-dir", required=True, help="where submission.csv, predict.json go")
    ap.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                    help=f"setting, repeatable; keys: {PredictConfig.field_names()[3:]}")
    args = ap.parse_args(argv)
    params = parse_params(args.param)
    return PredictConfig.from_dict({**params, "model_dir": args.model_dir,
                                    "data_dir": args.data_dir, "out_dir": args.out_dir})


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m lmsys_pref predict`."""
    cfg = parse_args(argv)
    summary = predict(cfg)
    print(f"{summary['rows']} rows scored in {summary['total_seconds']:.1f}s -> "
          f"{Path(cfg.out_dir) / 'submission.csv'}")
    return 0
