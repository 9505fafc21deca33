"""Bias probes for any saved model: position, verbosity, self-enhancement, judge-bias sets.

Every probe is a seeded transform of a labelled frame (as `data.load_split` returns), so two
models probed with the same seed see exactly the same inputs. A model is anything with
`predict_proba(df, tta=None|"none"|"swap") -> (n, k)`, as `infer.loaders.load_predictor`
returns.
`probe` returns the `bias.json` mapping; `write` renders `bias.md` and the bar charts.
"""
from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .. import data, runs
from ..configs import params_help, parse_params
from ..configs.bias import BiasConfig
from ..data.task import AUTO, resolve
from ..infer import loaders
from . import judge_sets

log = logging.getLogger("lmsys_pref")

FILLER = ("It is worth keeping this in mind.", "This is an important point to consider.",
          "There are many ways to look at this question.", "I hope this helps you.",
          "Let me know if you have any other questions.", "Overall, this covers the topic.")
CONFIDENT = ("I am certain about this.", "Definitely.", "Without any doubt, this is correct.",
             "I am 100% confident in this answer.")
HEDGE_PREFIX = "I am not entirely sure, but I think this may be right."
# Hedges removed by the assertiveness probe; modal hedges become "will" to stay grammatical.
HEDGES = re.compile(r"(?i)\b(?:i think|i believe|it seems(?: that)?|perhaps|possibly|probably|"
                    r"in my opinion|i'm not sure,? but|generally|typically),?\s*")
MODALS = re.compile(r"\b(?:might|may|could)\b")
SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _sentences(text: str) -> list[str]:
    return [s for s in SENTENCE.split(text.strip()) if s]


def repeat_sentences(text: str, rng: np.random.Generator, k: int) -> str:
    """Append `k` copies of the answer's own sentences (length, no new content)."""
    sents = _sentences(text)
    return text if not sents else text + " " + " ".join(rng.choice(sents, size=k))


def add_filler(text: str, rng: np.random.Generator, k: int) -> str:
    """Append `k` generic sentences that say nothing about the question."""
    return text + " " + " ".join(rng.choice(FILLER, size=k, replace=False))


def add_markdown(text: str, rng: np.random.Generator, k: int) -> str:
    """Wrap the answer in a heading, bullets and a rule (structure, no new content)."""
    lines = [ln if not ln.strip() or ln.lstrip().startswith(("-", "*", "#")) else f"- {ln}"
             for ln in text.splitlines()]
    return "## Answer\n\n" + "\n".join(lines) + "\n\n---\n**Summary:** see above."


def add_confidence(text: str, rng: np.random.Generator, k: int) -> str:
    """Open and close the answer with confident phrasing."""
    a, b = rng.choice(CONFIDENT, size=2, replace=False)
    return f"{a} {text} {b}"


def remove_hedges(text: str, rng: np.random.Generator, k: int) -> str:
    """Drop hedging phrases and turn might/may/could into will."""
    return MODALS.sub("will", HEDGES.sub("", text))


def add_hedge(text: str, rng: np.random.Generator, k: int) -> str:
    """The opposite direction: open with an explicit hedge (a control for the two above)."""
    return f"{HEDGE_PREFIX} {text}"


VERBOSITY = {"repeat_sentences": repeat_sentences, "filler": add_filler, "markdown": add_markdown}
SELF_ENHANCEMENT = {"confident": add_confidence, "remove_hedges": remove_hedges,
                    "hedge": add_hedge}


def perturb(df: pd.DataFrame, fn, seed: int, k: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    """Apply `fn` to every non-empty turn of one answer per row; the side (0 = A, 1 = B) is seeded.

    Returns:
        The perturbed copy and the side changed in each row.
    """
    rng = np.random.default_rng(seed)
    sides = rng.integers(0, 2, len(df))
    out = df.copy()
    for side, col in enumerate(("response_a", "response_b")):
        out[col] = [[fn(t, rng, k) if t.strip() else t for t in turns] if s == side else turns
                    for turns, s in zip(df[col], sides)]
    return out, sides


def chars(turns: pd.Series) -> np.ndarray:
    """Total characters of each cell's turns."""
    return turns.map(lambda ts: sum(map(len, ts))).to_numpy(dtype=float)


def preference(probs: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Expected score of `side` per row: P(win) + P(tie) / 2 (no tie term for two classes)."""
    rows = np.arange(len(probs))
    return probs[rows, side] + (probs[:, 2] / 2 if probs.shape[1] > 2 else 0.0)


def position_stats(p: np.ndarray, q: np.ndarray, labels: np.ndarray) -> dict:
    """Compare scores `p` of the rows with `q`, the swapped rows' scores mapped back to A/B."""
    raw = np.vstack([p, data.swap(q)])  # as the model saw them: column 0 is the first position
    decided = raw.argmax(1) < 2
    return {"flip_consistency": float((p.argmax(1) == q.argmax(1)).mean()),
            "mean_abs_gap": float(np.abs(p[:, 0] - q[:, 0]).mean()),
            "first_wins_share": float((raw.argmax(1) == 0)[decided].mean()) if decided.any()
            else None,
            "mean_first_minus_second": float((raw[:, 0] - raw[:, 1]).mean()),
            "human_first_wins_share": float((labels == 0).sum() / max((labels < 2).sum(), 1))}


def probe_position(predictor, df: pd.DataFrame, tta_modes=("none", "swap")) -> dict:
    """Position-bias figures per TTA mode."""
    labels = df["label"].to_numpy()
    out = {}
    for mode in tta_modes:
        p = predictor.predict_proba(df, tta=mode)
        q = data.swap(predictor.predict_proba(data.swap(df), tta=mode))
        out[mode] = position_stats(p, q, labels)
    return out


def length_slope(log_ratio: np.ndarray, score: np.ndarray) -> float:
    """Least-squares slope of an A-preference score on log(len A / len B)."""
    x = log_ratio - log_ratio.mean()
    return float((x * (score - score.mean())).sum() / max((x * x).sum(), 1e-12))


def human_length_effect(df: pd.DataFrame, base: np.ndarray) -> dict:
    """How human (and, on the same rows, model) preference moves with relative length."""
    lr = np.log1p(chars(df["response_a"])) - np.log1p(chars(df["response_b"]))
    human = data.onehot(df["label"], max(base.shape[1], 3))  # a tie column, empty without ties
    longer = (lr < 0).astype(int)  # 0 = A is longer (or equal), 1 = B
    buckets = pd.cut(np.abs(lr), [0, 0.1, 0.3, 0.7, np.inf], include_lowest=True)
    table = (pd.DataFrame({"bucket": buckets, "longer_wins": human[np.arange(len(df)), longer],
                           "tie": human[:, 2]})
             .groupby("bucket", observed=True)
             .agg(n=("tie", "size"), longer_wins=("longer_wins", "mean"), tie=("tie", "mean")))
    table.index = table.index.astype(str)
    return {"human_slope": length_slope(lr, preference(human, np.zeros(len(df), int))),
            "model_slope": length_slope(lr, preference(base, np.zeros(len(df), int))),
            "human_longer_wins_share": float(human[np.arange(len(df)), longer].mean()),
            "by_abs_log_ratio": table.reset_index().to_dict("records")}


def side_turns(df: pd.DataFrame, side: np.ndarray) -> list[list[str]]:
    """The turns of the answer named by `side` (0 = A, 1 = B) in each row."""
    return [a if s == 0 else b for a, b, s in zip(df["response_a"], df["response_b"], side)]


def shift_stats(base: np.ndarray, after: np.ndarray, side: np.ndarray, changed: np.ndarray,
                dlog: np.ndarray) -> dict:
    """Mean movement of the perturbed side's expected score over the rows that changed."""
    if not changed.any():
        return {"n_changed": 0}
    rows = np.arange(len(base))
    delta = (preference(after, side) - preference(base, side))[changed]
    out = {"n_changed": int(changed.sum()), "mean_shift": float(delta.mean()),
           "mean_win_shift": float((after[rows, side] - base[rows, side])[changed].mean()),
           "share_up": float((delta > 1e-9).mean()),
           "mean_log_len_change": float(dlog[changed].mean())}
    if abs(out["mean_log_len_change"]) > 1e-6:  # shift per unit log length, vs human slope
        out["implied_slope"] = out["mean_shift"] / out["mean_log_len_change"]
    return out


def probe_shift(predictor, df: pd.DataFrame, base: np.ndarray, transforms: dict, seed: int,
                k: int) -> dict:
    """Movement of the perturbed answer's expected score for each transform."""
    out = {}
    for i, (name, fn) in enumerate(tqdm(transforms.items(), desc="bias probes", leave=False)):
        pert, side = perturb(df, fn, seed + i, k)
        before, after = side_turns(df, side), side_turns(pert, side)
        changed = np.array([x != y for x, y in zip(before, after)], dtype=bool)
        dlog = (np.log1p([sum(map(len, t)) for t in after])
                - np.log1p([sum(map(len, t)) for t in before]))
        out[name] = shift_stats(base, predictor.predict_proba(pert), side, changed, dlog)
    return out


def sample_rows(df: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """A seeded subset of rows (all rows when `max_rows` is 0 or larger than the frame)."""
    if not max_rows or len(df) <= max_rows:
        return df.reset_index(drop=True)
    return df.sample(n=max_rows, random_state=seed).sort_index().reset_index(drop=True)


def probe(predictor, df: pd.DataFrame, cfg: BiasConfig) -> dict:
    """Run every probe on `df` (labelled, decoded); returns the `bias.json` mapping."""
    df = sample_rows(df, cfg.max_rows, cfg.seed)
    base = predictor.predict_proba(df)
    verbosity = probe_shift(predictor, df, base, VERBOSITY, cfg.seed, cfg.verbosity_repeats)
    verbosity["human"] = human_length_effect(df, base)
    out = {"n_rows": len(df), "seed": cfg.seed,
           "position": probe_position(predictor, df, cfg.tta_modes),
           "verbosity": verbosity,
           "self_enhancement": probe_shift(predictor, df, base, SELF_ENHANCEMENT,
                                           cfg.seed + 100, 1)}
    if cfg.judge_bias_dir and Path(cfg.judge_bias_dir).exists():
        scores = judge_sets.score(predictor, cfg.judge_bias_dir, cfg.max_judge_rows, cfg.seed)
        if scores:
            out["judge_sets"] = scores
    return out


def scored_file(model_dir: str | Path) -> Path | None:
    """The oof.csv or val.csv of the run that saved `model_dir` (its OUT_DIR, or OUT_DIR/model):
    the file its metrics.json `eval` names, else whichever exists; None without one."""
    model_dir = Path(model_dir)
    for run_dir in [model_dir] + ([model_dir.parent] if model_dir.name == "model" else []):
        names = list(runs.EVAL_FILES.values())
        if (run_dir / "metrics.json").exists():
            scored = runs.load_json(run_dir / "metrics.json").get("eval")
            names = [runs.EVAL_FILES[scored]] if scored in runs.EVAL_FILES else names
        found = [run_dir / n for n in names if (run_dir / n).exists()]
        if found:
            return found[0]
    return None


HELD_OUT_NOTES = {  # what the probed model saw of the rows, by the file that named them
    "val.csv": "the run's holdout: the saved model never trained on them",
    "oof.csv": "out of fold: each row was held out of one fold's model; a model saved from "
               "every row (XGBoost's final fit) or averaging the folds trained on them too",
    "fold_models": "held out: each row is scored by the one fold model (model/fold_k) that "
                   "never trained on it",
}


def select_rows(df: pd.DataFrame, cfg: BiasConfig, source: Path) -> tuple[pd.DataFrame, dict]:
    """The rows to probe (`cfg.rows`) and the `rows` entry of bias.json saying which they are.

    'held_out' keeps the rows whose ids the run scored without training on them (its val.csv or
    oof.csv); with no such file, or when `source` (data_dir's train.csv) holds none of its ids
    (a folder the run did not train on), every row is probed and the entry says why.
    """
    scored = scored_file(cfg.model_dir) if cfg.rows == "held_out" else None
    info = {"rows_used": "all", "source": str(source), "n_available": len(df)}
    if cfg.rows == "all":
        return df, {**info, "note": "rows: all"}
    if scored is None:
        return df, {**info, "note": f"no oof.csv or val.csv beside {cfg.model_dir}: which rows "
                    "the model trained on is unknown, so it may have trained on these"}
    ids = runs.read_probs(scored)["id"]
    keep = df["id"].isin(ids).to_numpy()
    if not keep.any():
        return df, {**info, "note": f"none of the {len(ids)} ids of {scored} is in {source}: "
                    "not the run's training data, so every row is new to the model"}
    if len(ids) > keep.sum():
        log.warning("%s: %d of the %d ids of %s are not in the file; probing the others",
                    source, len(ids) - keep.sum(), len(ids), scored)
    fold_models = scored.name == "oof.csv" and loaders.has_fold_models(cfg.model_dir)
    return df[keep].reset_index(drop=True), {
        "rows_used": "held_out" if scored.name == "val.csv" or fold_models else "out_of_fold",
        "source": str(scored), "n_available": int(keep.sum()),
        "n_missing": int(len(ids) - keep.sum()),
        "note": HELD_OUT_NOTES["fold_models" if fold_models else scored.name]}


def run(cfg: BiasConfig) -> dict:
    """Load the model and the rows named by `cfg`, probe, write the outputs; returns bias.json."""
    from . import bias_report  # figures and markdown: matplotlib only when writing

    predictor = loaders.load_predictor(cfg.model_dir, out_of_fold=cfg.rows == "held_out")
    path = data.find_file(cfg.data_dir, "train")
    saved = runs.read_model_meta(cfg.model_dir)["config"].get("task", AUTO)
    task = resolve(AUTO, cfg.data_dir, default=resolve(saved, None))  # else the model's task
    df, rows = select_rows(data.load_split(path, labelled=True, lenient=cfg.lenient, task=task),
                           cfg, path)
    log.info("bias: %s rows (%d) from %s", rows["rows_used"], len(df), rows["source"])
    result = {"model_dir": str(cfg.model_dir), "data_dir": str(cfg.data_dir), "rows": rows,
              **probe(predictor, df, cfg), "config": cfg.to_dict()}
    bias_report.write(result, cfg.out_dir)
    return result


def cli_main(argv: list[str]) -> int:
    """`python -m lmsys_pref bias --model-dir M --data-dir D --out-dir O [-p key value]`."""
    ap = argparse.ArgumentParser(prog="lmsys-pref bias", epilog=params_help(BiasConfig),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"))
    args = ap.parse_args(argv)
    cfg = BiasConfig.from_dict({**parse_params(args.param), "model_dir": args.model_dir,
                                "data_dir": args.data_dir, "out_dir": args.out_dir})
    run(cfg)
    print(f"wrote {Path(cfg.out_dir) / 'bias.json'} and {Path(cfg.out_dir) / 'bias.md'}")
    return 0
