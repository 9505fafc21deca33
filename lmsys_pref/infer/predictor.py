"""The predictor: a saved LM or encoder classifier scoring data frames (prompt encoding, swap
TTA, one replica per device) through the engine. `predict_frame` also scores the holdout rows
of a training run. Imports point one way: engine <- tta <- predictor <- commands and training.
"""
from __future__ import annotations

import contextlib
import gc
from pathlib import Path

import numpy as np
import torch

from .. import data, runs
from ..configs.encoder import EncoderConfig
from ..configs.lm import LMConfig
from ..configs.parts import PromptSpec, ScoringSpec
from ..configs.predict import DEFAULT_TTA_FRACTION
from ..files.tables import as_id_text
from ..model import loading, models, prompt
from . import engine
from .batching import compiles_per_shape
from .devices import parse_devices
from .tta import score as score_with_tta


def pad_id_of(model, tokenizer=None) -> int:
    """The id to pad with: the model's `pad_token_id` (HF classifiers pool the last token that
    differs from it), else the tokenizer's; the model config gets it when it had none."""
    first = model[0] if isinstance(model, (list, tuple)) else model
    config = getattr(first, "config", None)
    pad = getattr(config, "pad_token_id", None)
    if pad is None and tokenizer is not None:
        pad = tokenizer.pad_token_id
        pad = tokenizer.eos_token_id if pad is None else pad
        for m in (model if isinstance(model, (list, tuple)) else [model]):
            if getattr(m, "config", None) is not None:
                m.config.pad_token_id = pad
    if pad is None:
        raise ValueError("no pad token id: set model.config.pad_token_id or tokenizer.pad_token")
    return int(pad)


def predict_frame(model, tokenizer, df, prompt_spec: PromptSpec, scoring: ScoringSpec,
                  tta: str | None = None, *, progress: bool = True,
                  cache_dir: str | Path | None = None, cache_key: str = "", budget=None,
                  tta_fraction: float | None = None) -> tuple[np.ndarray, engine.InferStats]:
    """Encode a frame with `prompt.encode`, score it (with TTA) and return its probabilities.

    Args:
        model: a classifier or one replica per entry of `scoring.devices`.
        tokenizer: the model's tokenizer.
        df: rows as `data.load_split` returns them.
        prompt_spec: how rows become token ids (a config's `.prompt`).
        scoring: devices, tta, token_budget, objective (a config's `.scoring`).
        tta: "none", "swap", "swap_device" or "adaptive"; None = `scoring.tta`.
        progress: tqdm progress bar.
        cache_dir: folder for resumable partial predictions (None = off).
        cache_key: extra identity of the model for the cache (e.g. its folder).
        budget: an `infer.budget.Budget` that watches the batches (projection, time limit)
            and grants the adaptive swap pass its time.
        tta_fraction: "adaptive": the largest share of rows scored swapped (None = the
            default, `configs.predict.DEFAULT_TTA_FRACTION`).

    Returns:
        (n, k) probabilities in the rows' order, and the `InferStats` of all passes together
        (an adaptive run's `adaptive` names the rows of its swap pass).
    """
    mode = data.check_tta(tta if tta is not None else scoring.tta)
    fraction = DEFAULT_TTA_FRACTION if tta_fraction is None else tta_fraction
    ids = prompt.encode(df, tokenizer, prompt_spec)
    swapped = prompt.encode(data.swap(df), tokenizer, prompt_spec) if mode != "none" else None
    cache = Path(cache_dir) / "scores.npz" if cache_dir else None
    first = model[0] if isinstance(model, (list, tuple)) else model
    watch = budget.watch(
        model, prompt.lengths(ids), 2 if mode in ("swap", "swap_device") else 1,
        prompt_spec.max_length, optional_passes=fraction if mode == "adaptive" else 0.0,
        warmup_batches=2 if compiles_per_shape(first) else 1,  # a 2nd compile: batching
    ) if budget is not None else contextlib.nullcontext()
    with watch:
        return score_with_tta(
            model, ids, swapped, mode=mode, devices=scoring.devices, cache_path=cache,
            fraction=fraction, budget=budget, pad_id=pad_id_of(model, tokenizer),
            token_budget=scoring.token_budget, objective=scoring.objective, progress=progress,
            cache_key=cache_key)


def load_predictor(model_dir: str | Path, **overrides):
    """`predict.LOADERS` entry for kinds "lm" and "encoder": an `LMPredictor`, or a
    `FoldMean` for a k-fold run.

    Args:
        model_dir: a run folder or its model/ folder.
        **overrides: config fields to change (devices, tta, max_length, token_budget, ...)
            plus `progress` and `cache_dir`.
    """
    model_dir = runs.resolve_model_dir(model_dir)
    if runs.read_model_meta(model_dir).get("folds"):
        return FoldMean(model_dir, **overrides)
    return LMPredictor(model_dir, **overrides)


class FoldMean:
    """A k-fold run's model/: the mean of its folds' probabilities (each fold with swap TTA).

    One fold is loaded at a time (one replica per device), scores every row and is freed
    before the next, so a k-fold run needs the memory of one model, not k. With adaptive TTA
    each fold makes its own swap pass on the rows it is least sure of, while it is loaded:
    a swap pass after the folds' mean first pass would load every fold twice (or hold k
    models), and the budget shares the swap passes' time among the folds.
    """

    def __init__(self, model_dir: str | Path, **overrides):
        self.model_dir = runs.resolve_model_dir(model_dir)
        self.folds = [self.model_dir / f for f in runs.read_model_meta(self.model_dir)["folds"]]
        missing = [str(f) for f in self.folds if not f.is_dir()]
        if missing:  # before any model is loaded
            raise FileNotFoundError(f"{self.model_dir}: fold folder(s) {missing} are missing")
        self.overrides, self.stats = overrides, {}
        self.budget = overrides.get("budget")
        if self.budget is not None:  # the projection counts every fold still to score
            self.budget.models = len(self.folds)

    def predict_proba(self, df, tta: str | None = None) -> np.ndarray:
        """(n, 3) mean probabilities of the folds, in the rows' order."""
        probs, seconds, passes = [], 0.0, []
        for fold in self.folds:
            p, stats = _score_with_fold(fold, self.overrides, df, tta)
            probs.append(p)
            seconds += stats.get("seconds") or 0.0
            passes += [stats.pop("adaptive")] if "adaptive" in stats else []
            self.stats = {**stats, "folds": len(self.folds), "seconds": seconds}
        if passes:  # each fold's own swap pass
            self.stats["adaptive"] = {"folds": passes}
        return np.mean(probs, axis=0)


class OutOfFold:
    """A k-fold run's rows, each scored by the one fold model that never trained on it.

    What the bias probes need: a perturbed or swapped row keeps its id, so it goes to the same
    fold. Rows of ids no fold held out raise a `ValueError` naming them.
    """

    def __init__(self, model_dir: str | Path, **overrides):
        self.model_dir = runs.resolve_model_dir(model_dir)
        held = runs.load_json(self.model_dir / runs.HELD_OUT)
        self.fold_of = {i: name for name, ids in held.items() for i in as_id_text(ids)}
        self.overrides, self.stats = overrides, {}

    def predict_proba(self, df, tta: str | None = None) -> np.ndarray:
        ids = df["id"].to_numpy()
        folds = np.array([self.fold_of.get(i, "") for i in as_id_text(ids)])
        if (folds == "").any():
            raise ValueError(f"{self.model_dir}: id(s) {ids[folds == ''][:5].tolist()} were "
                             "held out of no fold")
        out = np.zeros((len(df), 3))
        for name in sorted(set(folds)):
            rows = np.flatnonzero(folds == name)
            out[rows], self.stats = _score_with_fold(self.model_dir / name, self.overrides,
                                                     df.iloc[rows], tta)
        return out


def _score_with_fold(fold_dir: Path, overrides: dict, df, tta: str | None
                     ) -> tuple[np.ndarray, dict]:
    """One fold's probabilities of `df` and stats; the fold's replicas are freed afterwards.

    Each fold gets its own cache folder: the folds score the same rows differently.
    """
    overrides = dict(overrides)
    if overrides.get("cache_dir"):
        overrides["cache_dir"] = str(Path(overrides["cache_dir"]) / fold_dir.name)
    scorer = LMPredictor(fold_dir, **overrides)
    probs, stats = scorer.predict_proba(df, tta), scorer.stats
    del scorer
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return probs, stats


class LMPredictor:
    """A saved LM or encoder classifier as a `runs.Predictor` (`predict_proba(df, tta=None)`).

    One replica is loaded per distinct device of `devices`; `stats` holds the last call's
    `InferStats.to_dict()`.
    """

    def __init__(self, model_dir: str | Path, **overrides):
        self.model_dir = runs.resolve_model_dir(model_dir)
        self.progress = bool(overrides.pop("progress", True))
        self.cache_dir = overrides.pop("cache_dir", None)
        self.budget = overrides.pop("budget", None)  # infer.budget.Budget, shared by the folds
        self.tta_fraction = overrides.pop("tta_fraction", None)  # adaptive TTA's share of rows
        meta = runs.read_model_meta(self.model_dir)
        cls = EncoderConfig if meta["kind"] == "encoder" else LMConfig
        unknown = sorted(set(overrides) - set(cls.field_names()))
        if unknown:  # before the slow model load
            raise ValueError(f"{self.model_dir}: unknown setting(s) {unknown} for a {cls.__name__}")
        overrides = {k: v for k, v in overrides.items() if v is not None}
        self.devices = parse_devices(overrides.get("devices")
                                           or meta.get("config", {}).get("devices", "auto"))
        loaded: dict = {}
        for dev in self.devices:  # same device twice ("cpu,cpu") shares one copy of the weights
            if dev not in loaded:  # overrides such as model_id (base model moved) apply here
                loaded[dev] = loading.load_for_inference(self.model_dir, device=str(dev),
                                                        **overrides)
        _, self.tokenizer, self.cfg = loaded[self.devices[0]]
        if "max_length" not in overrides:  # an explicit -p max_length wins
            self.cfg = self.cfg.for_scoring()
        self.replicas = [loaded[d][0] for d in self.devices]
        self.stats: dict = {}

    def cache_key(self) -> str:
        """The model's identity for cached scores: its folder, files' times and settings that
        change scores without changing the token ids (the attention kernel the loaded model
        runs, not the setting: `auto` differs per device)."""
        stamp = max((p.stat().st_mtime_ns for p in self.model_dir.iterdir() if p.is_file()),
                    default=0)
        attention = models.describe(self.replicas[0])["attn_implementation"]
        return (f"{self.model_dir.resolve()}|{stamp}|{self.cfg.quantization}|{self.cfg.dtype}"
                f"|{attention}")

    def predict_proba(self, df, tta: str | None = None) -> np.ndarray:
        """(n, 3) probabilities of `df`'s rows in order; `tta` None = the saved setting."""
        probs, stats = predict_frame(
            self.replicas, self.tokenizer, df, self.cfg.prompt, self.cfg.scoring, tta,
            progress=self.progress, cache_dir=self.cache_dir, cache_key=self.cache_key(),
            budget=self.budget, tta_fraction=self.tta_fraction)
        self.stats = (stats.to_dict(df["id"]) | {"rows": len(df), "scored_rows": stats.rows}
                      | models.describe(self.replicas[0]))
        return probs
