"""Rendering of a bias probe result: bias.json, bias.md and PNG bar charts (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works on headless machines and inside papermill
import matplotlib.pyplot as plt  # noqa: E402

from .. import runs  # noqa: E402


def _fmt(v) -> str:
    return "–" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def table(rows: dict[str, dict], cols: list[str], first: str) -> str:
    """A markdown table: one row per key of `rows`, the given columns."""
    lines = [f"| {first} | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(_fmt(r.get(c)) for c in cols) + " |"
              for name, r in rows.items()]
    return "\n".join(lines)


def bar_chart(path: Path, groups: dict[str, dict], cols: list[str], title: str,
              ref: float | None = None) -> Path:
    """Grouped bars: one group per key of `groups`, one bar per column; optional reference line."""
    fig, ax = plt.subplots(figsize=(min(12, 3 + 0.6 * len(groups) * len(cols) ** 0.5), 4.2))
    width = 0.8 / len(cols)
    for j, col in enumerate(cols):
        vals = [groups[g].get(col) or 0.0 for g in groups]
        ax.bar([i + j * width for i in range(len(groups))], vals, width, label=col)
    if ref is not None:
        ax.axhline(ref, color="grey", ls="--", lw=1)
    ax.set_xticks([i + width * (len(cols) - 1) / 2 for i in range(len(groups))])
    ax.set_xticklabels(list(groups), rotation=30 if len(groups) > 4 else 0, ha="right"
                       if len(groups) > 4 else "center", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


POSITION_COLS = ["flip_consistency", "mean_abs_gap", "first_wins_share", "human_first_wins_share"]
SHIFT_COLS = ["n_changed", "mean_shift", "mean_win_shift", "share_up", "mean_log_len_change",
              "implied_slope"]
JUDGE_COLS = ["n", "accuracy", "accuracy_tta", "agreement", "reference_accuracy",
              "reference_agreement"]


def figures(result: dict, out: Path) -> dict[str, Path]:
    """One PNG per probe section."""
    figs = {"position": bar_chart(out / "bias_position.png", result["position"],
                                  ["flip_consistency", "first_wins_share"],
                                  "Position bias by TTA mode", ref=0.5)}
    shifts = {k: v for k, v in result["verbosity"].items() if k != "human"}
    figs["verbosity"] = bar_chart(out / "bias_verbosity.png", shifts, ["implied_slope"],
                                  "Verbosity: score shift per unit log length "
                                  "(dashed: human slope)",
                                  result["verbosity"]["human"]["human_slope"])
    figs["self_enhancement"] = bar_chart(out / "bias_self_enhancement.png",
                                         result["self_enhancement"], ["mean_shift"],
                                         "Assertiveness: shift of the edited answer", 0.0)
    if "judge_sets" in result:
        figs["judge_sets"] = bar_chart(out / "bias_judge_sets.png",
                                       result["judge_sets"]["subsets"],
                                       ["accuracy", "agreement"],
                                       "Judge-bias sets: accuracy and positional agreement", 0.5)
    return figs


def tone_line(result: dict) -> str:
    """Confident minus hedged: both add a sentence of similar length, so their difference
    isolates the tone from the length."""
    se = result["self_enhancement"]
    conf, hedge = se.get("confident", {}).get("mean_shift"), se.get("hedge", {}).get("mean_shift")
    if conf is None or hedge is None:
        return ""
    return (f"\nTone effect (confident − hedge, both add similar length): "
            f"{conf - hedge:+.3f} expected score.\n")


def rows_line(result: dict) -> str:
    """Which rows were probed (bias.json `rows`, see `bias.select_rows`)."""
    rows = result.get("rows")
    if not rows:
        return ""
    return (f"Rows used: **{rows['rows_used']}**, {rows['n_available']} rows from "
            f"`{rows['source']}` ({rows['note']}).\n")


def markdown(result: dict, figs: dict[str, Path]) -> str:
    """The bias.md text."""
    human = result["verbosity"]["human"]
    shifts = {k: v for k, v in result["verbosity"].items() if k != "human"}
    parts = [f"# Bias probes\n\nModel `{result.get('model_dir', '?')}`, {result['n_rows']} rows "
             f"of `{result.get('data_dir', '?')}`, seed {result['seed']}.\n", rows_line(result),
             "## Position\n\nflip_consistency: same argmax after swapping A/B and mapping back; "
             "mean_abs_gap: mean |p_a − p'_b|; first_wins_share: share of decided predictions "
             "won by the first position (human: share of A wins among non-ties).\n",
             table(result["position"], POSITION_COLS, "tta"),
             f"\n![position]({figs['position'].name})\n",
             "## Verbosity\n\nOne answer per row padded without content; shift = change of its "
             "expected score P(win) + P(tie)/2 (the model's default TTA); implied_slope = shift "
             "per unit of log length, comparable with the human slope below.\n",
             table(shifts, SHIFT_COLS, "probe"),
             f"\nHuman preference slope on log(len A / len B): {human['human_slope']:.3f}; the "
             f"model's slope on the unperturbed rows: {human['model_slope']:.3f}; the longer "
             f"answer wins {human['human_longer_wins_share']:.1%} of human votes.\n",
             table({r["bucket"]: r for r in human["by_abs_log_ratio"]}, ["n", "longer_wins", "tie"],
                   "abs log length ratio"), f"\n![verbosity]({figs['verbosity'].name})\n",
             "## Self-enhancement / assertiveness\n\nConfident phrasing added, hedges removed, or "
             "(control) a hedge added to one answer per row.\n",
             table(result["self_enhancement"], SHIFT_COLS[:4], "probe"), tone_line(result),
             f"\n![self-enhancement]({figs['self_enhancement'].name})\n"]
    if "judge_sets" in result:
        js = result["judge_sets"]
        parts += ["## Judge-bias sets (LLMBar, EvalBiasBench)\n\naccuracy: mean over both response "
                  "orders (ties ignored); agreement: same verdict after swapping; reference: "
                  f"{js['reference_judge']} as published by LLMBar.\n",
                  table({**js["subsets"], "overall": js["overall"]}, JUDGE_COLS, "subset"),
                  f"\n![judge sets]({figs['judge_sets'].name})\n"]
    return "\n".join(parts)


def write(result: dict, out_dir: str | Path) -> Path:
    """Write bias.json, the figures and bias.md into `out_dir`; returns the bias.md path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs.save_json(out / "bias.json", result)
    figs = figures(result, out)
    path = out / "bias.md"
    path.write_text(markdown(result, figs))
    return path
