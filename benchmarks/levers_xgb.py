"""The data levers with XGBoost on the 1,500 shared rows, judged on rows no step of them touched
(issue 29; part of `bench_levers`).

Five prompt-grouped outer splits (seed 0) of the labelled rows. In split j:
 - H_j (a fifth, ~300 rows): held out of everything: no teacher, pseudo-labeller or student
   trains on it; each row is in H exactly once, so the held-out figures cover all 1,500 rows;
 - U_j (a quarter of the rest, ~300 rows, prompt-grouped, seed 1): a stand-in unlabelled test
   set: its labels are hidden (test.csv), the pseudo-label levers label it;
 - T_j (the other ~900 rows): train.csv of every run (XGBoost preset, 5 prompt-grouped folds,
   seed 42, so teacher and student folds match).
Each lever is a student run on T_j; its OOF log loss is over T_j (what a CV-choosing user sees)
and its held-out log loss is its final booster's on H_j (swap TTA, as the run scores test).
Differences are paired per row against the plain baseline: held-out, each row once; OOF, each
row's mean difference over the splits whose T holds it. A lever helps only when its held-out
difference is below -2 standard errors.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_pref import data, runs, xgb
from lmsys_pref.commands import pseudo_label
from lmsys_pref.configs.xgb import XGBConfig
from lmsys_pref.data import splits

COLS = list(data.LABEL_COLS)
OUTER = 5
PL = "pseudo_labels.csv"
LEVERS = {  # name -> (what it is, how the student is made; see `student_levers`)
    "baseline": "plain baseline (no lever)",
    "pl_final": "+ pseudo-labelled U from the baseline's final model (extra_train)",
    "pl_fold": "+ pseudo-labelled U per fold (`pseudo-label --per-fold`, extra_train {fold})",
    "teach_oof": "+ the baseline's own OOF as teacher (self-distillation, target 0.5 label + "
                 "0.5 teacher)",
    "teach_oof_only": "+ the baseline's own OOF as the only target (teacher_weights 0 1: its "
                      "OOF as soft labels)",
    "teach_fold": "+ per-fold teacher files (`--per-fold --split train`, teachers {fold}, "
                  "0.5 label + 0.5 teacher)",
    "extra_true": "+ U with its true labels as extra rows (what the pseudo-labels stand for)",
}


def partitions(train: pd.DataFrame):
    """(held, unlabelled, training) row positions of each outer split."""
    groups = splits.fold_groups(train, "prompt")
    y = train["label"].to_numpy()
    for rest, held in splits.kfold(y, OUTER, seed=0, groups=groups):
        tr, un = splits.kfold(y[rest], 4, seed=1, groups=groups[rest])[0]
        yield held, rest[un], rest[tr]


def write_split(work: Path, raw: pd.DataFrame, shared: Path, held, unlabelled, training
                ) -> dict[str, Path]:
    """The folders of one outer split: T/U (train.csv + U as test.csv without labels), T with
    the shared test.csv and U's labelled rows as extra.csv, and H as held.csv."""
    main, extra = work / "data", work / "data_extra"
    for folder in (main, extra):
        folder.mkdir(parents=True, exist_ok=True)
        raw.iloc[training].to_csv(folder / "train.csv", index=False)
    raw.iloc[unlabelled].drop(columns=COLS).to_csv(main / "test.csv", index=False)
    shutil.copy(shared / "test.csv", extra / "test.csv")
    raw.iloc[unlabelled].to_csv(extra / "extra.csv", index=False)
    raw.iloc[held].to_csv(work / "held.csv", index=False)
    return {"data": main, "data_extra": extra, "held": work / "held.csv"}


def student_levers(name: str, work: Path, paths: dict) -> dict:
    """The config fields of a lever's student (making its pseudo-label files first)."""
    base = str(work / "baseline")
    if name == "pl_final":
        pseudo_label.pseudo_label([base], paths["data"], work / "pl_final")
        return {"soft_labels": True, "extra_train": [str(work / "pl_final" / PL)]}
    if name == "pl_fold":
        pseudo_label.pseudo_label_per_fold([base], paths["data"], work / "pl_fold")
        return {"soft_labels": True, "extra_train": [str(work / "pl_fold" / "fold_{fold}" / PL)]}
    if name in ("teach_oof", "teach_oof_only"):
        weights = [0.0, 1.0] if name == "teach_oof_only" else []
        return {"teachers": [str(work / "baseline" / "oof.csv")], "teacher_weights": weights}
    if name == "teach_fold":
        pseudo_label.pseudo_label_per_fold([base], paths["data"], work / "t_fold", split="train")
        return {"teachers": [str(work / "t_fold" / "fold_{fold}" / PL)]}
    if name == "extra_true":
        return {"data_dir": str(paths["data_extra"]),
                "extra_train": [str(paths["data_extra"] / "extra.csv")]}
    return {}


def nll(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs / probs.sum(1, keepdims=True), 1e-15, 1)
    return -np.log(p[np.arange(len(labels)), labels])


def run_split(work: Path, paths: dict, ids: np.ndarray) -> dict[str, dict]:
    """Every lever's student on one split: per-row OOF and held-out losses, by row position."""
    held = data.load_split(paths["held"])
    out = {}
    for name in LEVERS:
        t0 = time.time()
        cfg = XGBConfig.from_preset("xgb", data_dir=str(paths["data"]), out_dir=str(work / name),
                                    n_folds=5, seed=42, n_jobs=1)
        m = xgb.fit(cfg.replace(**student_levers(name, work, paths)))
        oof = runs.read_probs(work / name / "oof.csv")
        probs = xgb.load_predictor(work / name).predict_proba(held)
        out[name] = {"oof_pos": np.searchsorted(ids, oof["id"].astype(str).to_numpy()),
                     "oof_nll": nll(oof["label"].to_numpy(int), oof[COLS].to_numpy(float)),
                     "held_pos": np.searchsorted(ids, held["id"].to_numpy()),
                     "held_nll": nll(held["label"].to_numpy(), probs),
                     "cv_honest": m["cv_honest"], "seconds": round(time.time() - t0, 1),
                     "extra_used": (m.get("extra_train") or {}).get("rows")}
    return out


def paired(per_split: list[dict], name: str, kind: str, n: int) -> dict:
    """Mean per-row difference (lever - baseline) and its standard error; for OOF each row's
    differences are averaged over the splits that scored it first."""
    total, count = np.zeros(n), np.zeros(n)
    for res in per_split:
        pos = res[name][f"{kind}_pos"]
        np.add.at(total, pos, res[name][f"{kind}_nll"] - res["baseline"][f"{kind}_nll"])
        np.add.at(count, pos, 1)
    diff = total[count > 0] / count[count > 0]
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    return {"delta": float(diff.mean()), "se": float(se),
            "t": float(diff.mean() / se) if se > 0 else 0.0, "rows": int(len(diff))}


def level(per_split: list[dict], name: str, kind: str) -> float:
    """Log loss of a lever's rows (OOF: every split's T rows; held-out: every row once)."""
    return float(np.concatenate([r[name][f"{kind}_nll"] for r in per_split]).mean())


def run(shared: Path, work: Path) -> dict:
    """The table's figures (and per-split timings) for every lever."""
    raw = pd.read_csv(shared / "train.csv", dtype=str, keep_default_na=False)
    train = data.load_split(shared / "train.csv")
    ids = np.sort(train["id"].to_numpy())  # a row's position in the per-row sums
    per_split = []
    for j, (held, unlabelled, training) in enumerate(partitions(train)):
        split_dir = work / f"split{j}"
        shutil.rmtree(split_dir, ignore_errors=True)
        paths = write_split(split_dir, raw, shared, held, unlabelled, training)
        per_split.append(run_split(split_dir, paths, ids))
    sizes = [(len(h), len(u), len(t)) for h, u, t in partitions(train)]
    return {"sizes": sizes, "levers": {name: {
        "what": what, "cv_honest": [r[name]["cv_honest"] for r in per_split],
        "oof_log_loss": level(per_split, name, "oof"),
        "held_out_log_loss": level(per_split, name, "held"),
        "oof_vs_baseline": paired(per_split, name, "oof", len(ids)),
        "held_out_vs_baseline": paired(per_split, name, "held", len(ids)),
        "seconds": [r[name]["seconds"] for r in per_split],
        "extra_rows_used": [r[name]["extra_used"] for r in per_split]}
        for name, what in LEVERS.items()}}


def _delta(d: dict) -> str:
    return f"{d['delta']:+.4f} ± {d['se']:.4f} (t {d['t']:+.1f})"


def reading(levers: dict) -> str:
    """How the table reads, from its figures: OOF vs held-out for honest and leaky levers."""
    rows = {k: (v["oof_vs_baseline"]["delta"], v["held_out_vs_baseline"], all(v["cv_honest"]))
            for k, v in levers.items() if k != "baseline"}
    gap = max(abs(o - h["delta"]) for o, h, honest in rows.values() if honest)
    leaky = ", ".join(f"{k} {o:+.4f} vs {h['delta']:+.4f}" for k, (o, h, honest) in
                      rows.items() if not honest)
    helps = [k for k, (_, h, _) in rows.items() if h["delta"] < -2 * h["se"]]
    return ("Read the OOF column as a competitor choosing by CV would, the held-out column as "
            f"the leaderboard. With cv_honest yes a lever's OOF Δ matches its held-out Δ "
            f"(within {gap:.4f}); with cv_honest no the OOF Δ is inflated by the leak (OOF vs "
            f"held-out Δ: {leaky}), so CV cannot choose such a lever. Helps on the held-out "
            f"rows at 2 SE: {', '.join(helps) or 'none'}.")


def markdown(res: dict) -> str:
    """The OOF vs held-out table."""
    n_h = sum(s[0] for s in res["sizes"])
    lines = [f"**XGBoost levers, OOF vs held-out** (issue 29): {OUTER} prompt-grouped outer "
             f"splits of the 1,500 rows; per split ~{res['sizes'][0][2]} training rows (T), "
             f"~{res['sizes'][0][1]} unlabelled stand-in test rows (U, labels hidden) and "
             f"~{res['sizes'][0][0]} held-out rows (H) no teacher, pseudo-labeller or student "
             f"trained on ({n_h} held-out rows in all, each once). XGBoost preset, 5 "
             "prompt-grouped folds (seed 42) in every run; Δ = lever - baseline, paired per "
             "row, ± one standard error. A lever helps only if its held-out Δ < -2 SE.", "",
             "| lever | cv_honest | OOF log loss | OOF Δ | held-out log loss | held-out Δ "
             "| helps? |", "|---|---|---:|---:|---:|---:|---|"]
    for name, r in res["levers"].items():
        honest = "yes" if all(r["cv_honest"]) else "**no**"
        base = name == "baseline"
        held = r["held_out_vs_baseline"]
        helps = "—" if base else ("**yes**" if held["delta"] < -2 * held["se"] else "no")
        lines.append(f"| {r['what']} | {honest} | {r['oof_log_loss']:.4f} | "
                     f"{'—' if base else _delta(r['oof_vs_baseline'])} | "
                     f"{r['held_out_log_loss']:.4f} | {'—' if base else _delta(held)} | "
                     f"{helps} |")
    lines += ["", reading(res["levers"]), "", "Seconds per student run (mean of the 5 "
              "splits): " + ", ".join(f"{k} {np.mean(v['seconds']):.0f}" for k, v in
                                      res["levers"].items()) + ".", ""]
    return "\n".join(lines)
