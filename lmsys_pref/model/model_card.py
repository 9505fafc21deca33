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
JUDGE = """An A/B-token judge: a plain causal LM. Its scores are its next-token logits of the
answer tokens {ids} ({words}) at the last token of each row;
every row ends with the question {question!r}.

Plain transformers{peft}:

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
{load}    tokenizer = AutoTokenizer.from_pretrained(FOLDER)
    tokenizer.padding_side = "right"
    batch = tokenizer.pad({{"input_ids": rows}}, return_tensors="pt")  # rows: token ids
    logits = model(**batch).logits
    last = batch["attention_mask"].sum(1) - 1  # right padding: each row's last token
    probs = torch.softmax(logits[torch.arange(len(last)), last][:, {ids}].float(), -1)

`probs` holds {labels}.
Build `rows` with `lmsys_pref.model.prompt.encode` (the layout and the question). A server
that returns next-token log-probabilities scores it the same way (vLLM: `max_tokens=1`,
`logprobs`, `allowed_token_ids={ids}`; softmax over those ids).
"""
JUDGE_LORA = """    from peft import PeftModel
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), FOLDER).eval()
"""
JUDGE_FULL = """    model = AutoModelForCausalLM.from_pretrained(FOLDER).eval()
"""


def readme(spec: ModelSpec, answer_tokens: dict | None = None) -> str:
    """The model folder's README: how to load it, with or without lmsys_pref.

    Args:
        spec: the saved model's part of its config (`cfg.model`).
        answer_tokens: an A/B-token judge's answer ids, words and question (`judge.meta`).
    """
    base = spec.model_id
    if answer_tokens:
        how = _judge(spec, answer_tokens)
    elif spec.head_layers > 1:
        how = NEEDS_US.format(why=f"its {spec.head_layers}-layer scoring head is lmsys_pref's")
    elif spec.random_init or base.startswith("pypi:") or spec.gguf_file or base.endswith(".gguf"):
        how = NEEDS_US.format(why=f"its base ({base}) is a random, PyPI or GGUF model")
    else:
        how = (PLAIN_LORA if spec.lora_r > 0 else PLAIN_FULL).format(base=base, n=spec.n_labels)
    return MODEL_README.format(kind=spec.kind, n=spec.n_labels,
                               labels=", ".join(LABEL_COLS[: spec.n_labels]), how=how)


def _judge(spec: ModelSpec, answers: dict) -> str:
    """How plain transformers (+ peft for an adapter) scores an A/B-token judge."""
    lora = spec.lora_r > 0
    base = spec.model_id
    odd = spec.random_init or base.startswith("pypi:") or spec.gguf_file or base.endswith(".gguf")
    peft = (f" + peft\n(BASE: `base_model_name_or_path` in adapter_config.json, {base}"
            f"{'; a random, PyPI or GGUF base: build it with lmsys_pref' if odd else ''})"
            if lora else "")
    return JUDGE.format(ids=answers["ids"], words=", ".join(repr(w) for w in answers["words"]),
                        question=answers["question"], peft=peft,
                        load=JUDGE_LORA if lora else JUDGE_FULL,
                        labels=", ".join(LABEL_COLS[: spec.n_labels]))
