"""The winners' data levers (issues 21, 29) on CPU: distillation, pseudo-labels, extra rows.

1. Planted: rows whose preferred answer ends with one of 20 "good" words; 80% of the labels
   replaced by uniform soft labels. A tiny Llama student with and without a teacher that knows
   the answer (the true labels, smoothed): held-out accuracy against the true labels.
2. XGBoost levers on the 1,500 shared rows, OOF vs held-out (`benchmarks/levers_xgb.py`): each
   lever judged on prompt-grouped rows no step of it touched, with paired per-row standard
   errors, beside the OOF a CV-choosing user sees and the run's `cv_honest`.
3. MiniLM on the real rows (issue 21: OOF only, teachers that saw the held-out rows): slow on 2
   CPU cores, so rerun only with LEVERS_MINILM=1; otherwise its stored figures are carried over
   and marked as such.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

from benchmarks import levers_xgb
from lmsys_pref import runs, xgb
from lmsys_pref.commands import pseudo_label
from lmsys_pref.configs.encoder import EncoderConfig
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.configs.xgb import XGBConfig
from lmsys_pref.eval import blend, judge_sets
from lmsys_pref.files import jsonio
from lmsys_pref.train import fit

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "runs" / "bench_levers"
RESULT = ROOT / "benchmarks" / "results" / "levers.json"
COLS = ["winner_model_a", "winner_model_b", "winner_tie"]
# MiniLM on 2 shared cores: 64 tokens, 40 steps of 16 rows per fold (about half an epoch), CE
STUDENT = dict(n_folds=5, max_length=64, max_steps=40, objective="ce", learning_rate=3e-4,
               untuned_baseline=False, torch_threads=2, save_steps=1000, resume=False)


def planted() -> dict:
    """The planted test of tests/test_distill.py, with its figures."""
    sys.path.insert(0, str(ROOT / "tests"))
    import synthetic_rows as p  # noqa: E402 - the tests' synthetic planted rows

    df = p.planted_rows(120, seed=0)
    truth = p.true_labels(df)
    data_dir = p.write_dir(WORK / "planted" / "data", p.soften(df, 0.8))
    teacher = p.teacher_file(df, WORK / "planted" / "teacher.csv")
    out = {}
    for name, teach in (("alone", []), ("taught", [str(teacher)])):
        t0 = time.time()
        cfg = LMConfig.from_preset("tiny-llama", data_dir=str(data_dir), val_frac=0.5,
                                   out_dir=str(WORK / "planted" / name), soft_labels=True,
                                   teachers=teach, epochs=6, learning_rate=0.02, resume=False)
        m = fit.fit(cfg)
        val = runs.read_probs(WORK / "planted" / name / "val.csv").astype({"id": str})
        acc = float((val[COLS].to_numpy().argmax(1) == truth[val["id"]].to_numpy()).mean())
        out[name] = {"accuracy": acc, "rows": len(val), "log_loss_one_hot_rows": m["log_loss"],
                     "seconds": round(time.time() - t0, 1)}
    return out


def teacher_runs(shared: Path) -> dict[str, Path]:
    """XGBoost (preset, 5 prompt-grouped folds) and the 4-model feature blend."""
    from benchmarks import bench_blend

    bench_blend.WORK = WORK / "blend_inputs"  # its runs land beside ours
    done = {"xgb": WORK / "xgb", "xgb_shallow": WORK / "blend_inputs" / "xgb_shallow",
            "blend": WORK / "blend"}
    if all((d / "metrics.json").is_file() for d in done.values()):
        return done
    xgb.fit(XGBConfig.from_preset("xgb", data_dir=str(shared), out_dir=str(WORK / "xgb"),
                                  n_folds=5, seed=42, n_jobs=2))
    train, test = bench_blend.data.load_competition(shared)
    dirs = [WORK / "xgb",
            bench_blend.xgb_run("xgb_shallow", shared, max_depth=3, learning_rate=0.05,
                                colsample_bytree=0.8, min_child_weight=10.0, n_jobs=2),
            bench_blend.sklearn_run("logreg_features", bench_blend.logreg_features, train, test),
            bench_blend.sklearn_run("tfidf_logreg", bench_blend.tfidf_logreg, train, test)]
    blend.blend(dirs, WORK / "blend")
    return {"xgb": WORK / "xgb", "xgb_shallow": dirs[1], "blend": WORK / "blend"}


def judge_pairs(judge_bias: Path, folder: Path) -> Path:
    """The judge-bias pairs as a test.csv (competition layout, ids of their own)."""
    frames = judge_sets.load(judge_bias)
    df = pd.concat(frames.values(), ignore_index=True)
    folder.mkdir(parents=True, exist_ok=True)
    out = pd.DataFrame({"id": [str(9_000_000_000 + i) for i in range(len(df))],
                        **{c: df[c].map(json.dumps) for c in ("prompt", "response_a",
                                                              "response_b")}})
    out.to_csv(folder / "test.csv", index=False)
    return folder


def student(name: str, shared: Path, **levers) -> dict:
    t0 = time.time()
    m = fit.fit(EncoderConfig.from_preset("minilm", data_dir=str(shared),
                                          out_dir=str(WORK / name), **STUDENT, **levers))
    return {"log_loss": m["log_loss"], "accuracy": m["accuracy"],
            "fold_log_losses": m["fold_log_losses"], "seconds": round(time.time() - t0),
            "teachers": m.get("teachers"), "extra_train": {
                k: v for k, v in (m.get("extra_train") or {}).items() if k != "dropped_ids"}}


def real_rows(shared: Path) -> dict:
    teach = teacher_runs(shared)
    oof = {k: runs.read_metrics(v)["log_loss"] for k, v in teach.items()}
    best = min(("xgb", "xgb_shallow"), key=oof.get)
    pairs = judge_pairs(shared.parent / "judge_bias", WORK / "judge_pairs")
    record = pseudo_label.pseudo_label([str(teach[best])], pairs, WORK / "pseudo")
    res = {"teacher_oof": oof, "pseudo_label": {k: record[k] for k in ("rows", "one_hot_rows")},
           "pseudo_label_model": best}
    res["alone"] = student("minilm", shared)
    res["settings"] = str(STUDENT)
    res["two_teachers"] = student("minilm_xgb_blend", shared, teachers=[
        str(teach["xgb"] / "oof.csv"), str(teach["blend"] / "oof.csv")])
    res["pseudo_extra"] = student("minilm_pseudo", shared, soft_labels=True,
                                  extra_train=[str(WORK / "pseudo" / "pseudo_labels.csv")])
    return res


def markdown(res: dict) -> str:
    p = res["planted"]
    lines = ["**1. Planted teacher** (tests/test_distill.py; tiny Llama, 120 rows, half held "
             "out, 80% of the labels uniform):", "",
             "| student | held-out accuracy (true labels) | seconds |", "|---|---:|---:|",
             f"| alone | {p['alone']['accuracy']:.3f} | {p['alone']['seconds']} |",
             f"| with the teacher | **{p['taught']['accuracy']:.3f}** | "
             f"{p['taught']['seconds']} |", ""]
    if "xgb_levers" not in res:
        return "\n".join(lines + ["The real-row parts need ../shared (absent here).", ""])
    lines += ["**2. " + levers_xgb.markdown(res["xgb_levers"])[2:]]
    if "real" in res:
        lines += minilm_markdown(res["real"], res.get("real_carried_over"))
    return "\n".join(lines)


def minilm_markdown(r: dict, carried: str | None) -> list[str]:
    teach = ", ".join(f"{k} {v:.4f}" for k, v in r["teacher_oof"].items())
    when = f" (measured {carried}; carried over, rerun with LEVERS_MINILM=1)" if carried else ""
    lines = [f"**3. MiniLM, OOF only** (issue 21){when}: 1,500 real rows, 5 prompt-grouped "
             f"folds ({r.get('settings', STUDENT)}). Teachers' OOF log loss: {teach}. "
             "Pseudo-labels: "
             f"{r['pseudo_label']['rows']} judge-bias pairs labelled by "
             f"{r['pseudo_label_model']} (soft, swap TTA).", "",
             "| MiniLM student | OOF log loss | accuracy | wall s |", "|---|---:|---:|---:|"]
    for key, label in (("alone", "alone"),
                       ("two_teachers", "+ XGBoost and 4-model blend OOF as teachers (leaky)"),
                       ("pseudo_extra", "+ pseudo-labelled judge-bias pairs (extra_train)")):
        s = r[key]
        lines.append(f"| {label} | {s['log_loss']:.4f} | {s['accuracy']:.3f} | "
                     f"{s['seconds']} |")
    leak = r["two_teachers"]["teachers"]["files"]
    used = r["pseudo_extra"]["extra_train"]
    return lines + ["", f"Teacher leak flags (held-out rows the teachers' models trained on, "
                    f"all folds): {[f['leaked_rows'] for f in leak]}: an OOF teacher saw the "
                    f"student's held-out rows through its other folds, so the distilled OOF is "
                    f"optimistic by an unknown margin (section 2 measures the same lever with "
                    f"XGBoost on held-out rows). Extra rows used {used.get('rows')}, dropped as "
                    f"repeats {used.get('dropped')}.", ""]


ISSUE21_SETTINGS = ("{'n_folds': 5, 'max_length': 64, 'epochs': 1, 'objective': 'ce', "
                    "'learning_rate': 0.0003, 'untuned_baseline': False, 'torch_threads': 2, "
                    "'save_steps': 1000, 'resume': False}")  # the settings of the stored figures


def real_rows_carried() -> tuple[dict | None, str | None]:
    """The MiniLM figures stored by an earlier run of this bench, and when and where they were
    measured."""
    if not RESULT.is_file():
        return None, None
    old = json.loads(RESULT.read_text())
    if "real" not in old:
        return None, None
    return ({"settings": ISSUE21_SETTINGS, **old["real"]},
            old.get("real_carried_over") or f"{old.get('date')}, {old.get('machine')}")


def run(shared: Path | None, quick: bool = False) -> dict:
    res = {"planted": planted()}
    if shared is not None and (shared / "train.csv").exists():
        res["xgb_levers"] = levers_xgb.run(shared, WORK / "xgb_levers")
        if os.environ.get("LEVERS_MINILM"):
            res["real"] = real_rows(shared)
        else:
            res["real"], res["real_carried_over"] = real_rows_carried()
            res = {k: v for k, v in res.items() if v is not None}
    return {"title": "The winners' data levers: teachers, pseudo-labels, extra rows (issues 21, "
                     "29)", "command": ".venv/bin/python -m benchmarks.run --only levers",
            "markdown": markdown(res), **jsonio.jsonable(res)}


if __name__ == "__main__":
    shared = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/lmsys-chatbot-arena")
    print(run(shared if shared.exists() else None)["markdown"])
