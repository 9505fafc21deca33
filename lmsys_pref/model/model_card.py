"""The README.md of a saved model folder: how to load it, with plain tools or with lmsys_pref."""
from __future__ import annotations

from ..configs.parts import ModelSpec
from ..data import LABEL_COLS

MODEL_README = """# A {kind} model saved by lmsys_pref

{n} labels: {labels}.
{how}
The tokenizer is in this folder; `lmsys_pref.json` holds the run's whole config.
With lmsys_pref: `lmsys-pref predict --model-dir <this folder> --data-dir <folder with test.csv>`.
"""
PLAIN_LORA = """Plain transformers + peft (1-layer head):

    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoTokenizer
    model = AutoPeftModelForSequenceClassification.from_pretrained(FOLDER, num_labels={n})
    tokenizer = AutoTokenizer.from_pretrained(FOLDER)

The base weights are read from `base_model_name_or_path` in adapter_config.json ({base});
pass the rows through `lmsys_pref.model.prompt.encode` to build the same inputs.
"""
PLAIN_FULL = """Plain transformers (1-layer head):
`AutoModelForSequenceClassification.from_pretrained(FOLDER)` and
`AutoTokenizer.from_pretrained(FOLDER)`.
"""
NEEDS_US = """This model needs lmsys_pref to load: {why}.
"""


def readme(spec: ModelSpec) -> str:
    """The model folder's README: how to load it, with or without lmsys_pref.

    Args:
        spec: the saved model's part of its config (`cfg.model`).
    """
    base = spec.model_id
    if spec.head_layers > 1:
        how = NEEDS_US.format(why=f"its {spec.head_layers}-layer scoring head is lmsys_pref's")
    elif spec.random_init or base.startswith("pypi:") or spec.gguf_file or base.endswith(".gguf"):
        how = NEEDS_US.format(why=f"its base ({base}) is a random, PyPI or GGUF model")
    else:
        how = (PLAIN_LORA if spec.lora_r > 0 else PLAIN_FULL).format(base=base, n=spec.n_labels)
    return MODEL_README.format(kind=spec.kind, n=spec.n_labels,
                               labels=", ".join(LABEL_COLS[: spec.n_labels]), how=how)
