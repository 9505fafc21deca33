"""Typed parameters: one parser (`configs.coerce`) for `-p`, notebooks and presets; the field
table behind `--help`."""
import dataclasses
import subprocess
import sys

import pytest

from lmsys_pref import __version__, cli
from lmsys_pref.commands import notebooks
from lmsys_pref.configs import ConfigError, coerce, field_table, load_preset, preset_names
from lmsys_pref.configs.bias import BiasConfig
from lmsys_pref.configs.encoder import EncoderConfig
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.configs.predict import MODEL_OVERRIDES, PredictConfig
from lmsys_pref.configs.xgb import XGBConfig

CLASSES = (LMConfig, EncoderConfig, XGBConfig, PredictConfig, BiasConfig)


@pytest.mark.parametrize("field, text, expected", [
    ("learning_rate", "1e-4", 1e-4),          # YAML 1.1 would keep it a string
    ("learning_rate", 3, 3.0),
    ("max_length", "512", 512),
    ("max_length", "5e2", 500),
    ("resume", "false", False),
    ("resume", "Yes", True),
    ("resume", 0, False),
    ("lora_targets", "q_proj,v_proj", ["q_proj", "v_proj"]),
    ("lora_targets", "[o_proj, v_proj]", ["o_proj", "v_proj"]),
    ("random_init", "{model_type: llama, hidden_size: 32}", {"model_type": "llama",
                                                             "hidden_size": 32}),
    ("model_id", "00123", "00123"),            # str stays the text given
    ("dtype", "bfloat16", "bf16"),             # torch spelling, canonicalised
    ("dtype", "float16", "fp16"),
    ("tta", "swap_device", "swap_device"),
    ("lora_init", "pissa_niter_4", "pissa_niter_4"),
    ("quantization", "", "none"),
])
def test_lm_values_are_converted(field, text, expected):
    cfg = LMConfig.from_dict({field: text})
    assert getattr(cfg, field) == expected and type(getattr(cfg, field)) is type(expected)


@pytest.mark.parametrize("cls, field, value, fragments", [
    (XGBConfig, "n_folds", "five", ["'n_folds'", "'five'", "int"]),
    (XGBConfig, "n_folds", "2.5", ["'n_folds'", "'2.5'", "int"]),
    (XGBConfig, "learning_rate", "fast", ["'learning_rate'", "'fast'", "float"]),
    (XGBConfig, "tta", "swap_device", ["'tta'", "'swap_device'", "one of 'none', 'swap'"]),
    (XGBConfig, "swap_augment", "maybe", ["'swap_augment'", "bool"]),
    (LMConfig, "dtype", "fp8", ["'dtype'", "'fp8'", "'auto', 'fp32', 'bf16', 'fp16'"]),
    (LMConfig, "layout", "chat", ["'layout'", "'gemma', 'turns'"]),
    (LMConfig, "truncation_side", "center", ["'truncation_side'"]),
    (LMConfig, "lr_scheduler", "exp", ["'lr_scheduler'", "'cosine'"]),
    (LMConfig, "lora_init", "olora", ["'lora_init'", "pissa_niter_<n>"]),
    (LMConfig, "random_init", "[1, 2]", ["'random_init'", "dict"]),
    (LMConfig, "model_id", True, ["'model_id'", "str"]),
    (PredictConfig, "max_length", "long", ["'max_length'", "int >= 1 or null"]),
    (PredictConfig, "tta", "both", ["'tta'", "adaptive or null"]),
    (BiasConfig, "tta_modes", "none,flip", ["tta_modes", "'flip'"]),
])
def test_bad_values_name_parameter_value_and_type(cls, field, value, fragments):
    with pytest.raises(ConfigError) as err:
        cls.from_dict({field: value})
    for frag in [cls.__name__] + fragments:
        assert frag in str(err.value)


def test_every_build_path_checks_types():
    with pytest.raises(ConfigError, match="n_folds"):
        XGBConfig.from_preset("xgb", n_folds="five")
    with pytest.raises(ConfigError, match="n_folds"):
        XGBConfig.from_namespace("xgb", {"n_folds": "five", "seed": None})
    with pytest.raises(ConfigError, match="seed"):
        XGBConfig().replace(seed="x")
    with pytest.raises(ConfigError, match="epochs"):
        LMConfig(epochs="one")
    cfg = XGBConfig.from_namespace("xgb", {"learning_rate": "1e-4", "n_folds": "0"})
    assert cfg.learning_rate == 1e-4 and cfg.n_folds == 0


def test_predict_config_dtype_and_nulls():
    cfg = PredictConfig.from_dict({"dtype": "float16", "max_length": "null", "tta": "None"})
    assert (cfg.dtype, cfg.max_length, cfg.tta) == ("fp16", None, None)
    assert "dtype" in MODEL_OVERRIDES and cfg.model_overrides() == {"dtype": "fp16"}
    assert PredictConfig().dtype is None


@pytest.mark.parametrize("name", preset_names())
def test_presets_build_typed_and_round_trip(name):
    kind = load_preset(name)["kind"]
    cls = {c.kind: c for c in CLASSES}[kind]
    cfg = cls.from_preset(name)
    assert cls.from_dict(cfg.to_dict()) == cfg
    assert set(cls.NOT_TRAINING) <= set(cls.field_names())


@pytest.mark.parametrize("cls", CLASSES)
def test_field_table_has_a_docstring_per_field(cls):
    rows = field_table(cls)
    assert [r.name for r in rows] == cls.field_names()
    assert [r.name for r in rows if not r.doc] == []
    defaults = {f.name: (f.default_factory() if f.default is dataclasses.MISSING else f.default)
                for f in dataclasses.fields(cls)}
    assert {r.name: r.default for r in rows} == defaults


def test_encoder_docstrings_override_inherited_ones():
    docs = {r.name: r.doc for r in field_table(EncoderConfig)}
    assert docs["objective"].startswith("'mse' = regression")
    assert docs["layout"] == {r.name: r.doc for r in field_table(LMConfig)}["layout"]
    types = {r.name: r.type for r in field_table(LMConfig)}
    assert types["dtype"] == "one of: auto, fp32, bf16, fp16" and types["lora_r"] == "int >= 0"


def test_train_help_lists_every_field_with_type_default_and_doc(capsys):
    assert cli.main(["train", "gemma", "--help"]) == 0
    out = capsys.readouterr().out
    for row in field_table(LMConfig):
        assert f"  {row.name}  ({row.type}; default " in out
    assert "max_length  (int >= 1; default 2048)" in out  # the gemma2-2b preset's value
    assert "truncation_side  (one of: right, left, middle; default 'right')" in out
    for doc in ("LoRA rank; 0 = no adapter", "Share max_length between prompt and answers",
                "'right' keeps the start of each part", "Padded tokens per inference batch"):
        assert doc in out


def test_help_of_other_baselines_and_bias(capsys):
    assert cli.main(["train", "xgb", "--help"]) == 0
    assert "n_folds  (int >= 0; default 5)" in capsys.readouterr().out
    assert cli.main(["train", "roberta", "--preset", "minilm", "--help"]) == 0
    assert "max_length  (int >= 1; default 256)" in capsys.readouterr().out


def test_bias_help_lists_fields(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["bias", "--help"])
    assert done.value.code == 0
    assert "tta_modes  (list of one of: none, swap, swap_device" in capsys.readouterr().out


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"lmsys_pref {__version__}"


def test_notebook_parameters_are_typed_before_the_notebook_runs(tmp_path):
    params = notebooks.notebook_parameters("xgb", None, str(tmp_path), None,
                                           {"learning_rate": "1e-4", "n_folds": "1"})
    assert params["learning_rate"] == 1e-4 and params["n_folds"] == 1
    assert params["preset"] == "xgb"
    with pytest.raises(ConfigError, match="'five' is not an int"):
        notebooks.notebook_parameters("xgb", None, str(tmp_path), None, {"n_folds": "five"})


def test_coerce_optional_list_and_unknown_types():
    assert coerce("x", "null", int | None) is None
    assert coerce("x", "7", int | None) == 7
    assert coerce("x", ("a", "b"), list[str]) == ["a", "b"]
    with pytest.raises(ConfigError, match=r"x\[1\]: None is not a str"):
        coerce("x", ["a", None], list[str])


def test_configs_and_core_import_no_torch():
    code = ("import sys, lmsys_pref.configs.lm, lmsys_pref.configs.encoder, "
            "lmsys_pref.runs.resume, lmsys_pref.runs, lmsys_pref.eval.blend, lmsys_pref.xgb, "
            "lmsys_pref.cli, "
            "lmsys_pref.commands.notebooks; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("cls, field, value, bound", [
    (XGBConfig, "n_estimators", "-5", "an integer >= 1"),   # was: zero trees, exit 0
    (XGBConfig, "max_train_rows", "-5", "an integer >= 0"),  # was: one row short
    (LMConfig, "max_test_rows", "-1", "an integer >= 0"),
    (XGBConfig, "n_folds", "-3", "an integer >= 0"),        # was: treated as 0
    (XGBConfig, "learning_rate", "inf", "a finite number > 0"),  # was: CV, then a broken model
    (XGBConfig, "learning_rate", "0", "a finite number > 0"),
    (XGBConfig, "subsample", "2", "in (0, 1]"),             # was: an XGBoost error in a cell
    (XGBConfig, "colsample_bytree", "0", "in (0, 1]"),
    (XGBConfig, "reg_lambda", "-1", ">= 0"),
    (XGBConfig, "seed", "-1", "in [0, 4294967295]"),
    (LMConfig, "val_frac", "1", "in (0, 1)"),
    (LMConfig, "lora_dropout", "1", "in [0, 1)"),
    (LMConfig, "warmup_ratio", "-0.1", "in [0, 1)"),
    (LMConfig, "batch_size", "0", ">= 1"),
    (LMConfig, "max_steps", "-2", ">= -1"),
    (LMConfig, "epochs", "-inf", "> 0"),
    (EncoderConfig, "grad_accum", "0", ">= 1"),
    (PredictConfig, "token_budget", "0", "an integer >= 1"),
    (BiasConfig, "max_rows", "-1", ">= 0"),
])
def test_out_of_range_values_stop_when_the_config_is_built(cls, field, value, bound):
    for build in (lambda: cls.from_dict({field: value}),
                  lambda: cls().replace(**{field: value})):
        with pytest.raises(ConfigError) as err:
            build()
        assert f"{cls.__name__}: parameter {field!r}" in str(err.value)
        assert "out of range" in str(err.value) and bound in str(err.value)


@pytest.mark.parametrize("cls", CLASSES)
def test_every_numeric_field_has_its_range_in_the_dataclass(cls):
    import types
    import typing

    from lmsys_pref.configs.fields import Bounds, type_hints

    def bounded(tp) -> bool:
        if typing.get_origin(tp) is typing.Annotated:
            return any(isinstance(m, Bounds) for m in typing.get_args(tp)[1:])
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            return all(bounded(a) for a in typing.get_args(tp) if a is not type(None))
        return tp not in (int, float)

    unbounded = [n for n, tp in type_hints(cls).items() if not bounded(tp)]
    assert unbounded == [], f"give these fields a range (configs.fields.Bounds): {unbounded}"


def test_ranges_show_in_help_and_defaults_are_in_range():
    types = {r.name: r.type for r in field_table(XGBConfig)}
    assert types["subsample"] == "float in (0, 1]" and types["learning_rate"] == "float > 0"
    for cls in CLASSES:
        cls()  # every default satisfies its own range
