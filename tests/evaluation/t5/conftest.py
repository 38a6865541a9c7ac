"""Stand-ins of everything the T5 zoo and benchmarks download: a tiny word-level tokenizer, a
tiny randomly initialised T5 in two layouts (v1.0: LM head tied to the embedding; Flan-T5 /
v1.1: a separate LM head), experts in each format (full models, PEFT LoRA adapters) and
small local datasets in the layout of the hub datasets (``save_to_disk``)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import save_file

from tests.evaluation.t5.examples import WORDS, example
from tests.threads import one_thread_fixture

ROOT = Path(__file__).resolve().parents[3]
VOCAB = ["<pad>", "</s>", "<unk>", *WORDS, "yes", "no", "acceptable", "unacceptable",
         *[str(i) for i in range(10)], "."]  # fmt: skip
SIZES = {"train": 24, "validation": 40, "test": 12}  # rows per dataset split
TINY = {"vocab_size": 48, "d_model": 16, "d_kv": 8, "d_ff": 32, "num_layers": 2,
        "num_decoder_layers": 2, "num_heads": 2, "relative_attention_num_buckets": 8,
        "dropout_rate": 0.0, "decoder_start_token_id": 0, "pad_token_id": 0,
        "eos_token_id": 1}  # fmt: skip
NLP_TASKS = ["paws", "qasc", "ropes"]
GLUE_TASKS = ["cola", "stsb"]


one_thread = one_thread_fixture("session", autouse=True)  # tiny stand-in models


def tokenizer():
    """A word-level tokenizer that lower-cases, splits words and punctuation and appends
    ``</s>`` like T5's (pad 0, eos 1, unk 2)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def perturbed(state: dict, seed: int, scale: float = 0.05) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=gen) for k, v in state.items()}


def save_model(folder: Path, config, state: dict) -> None:
    """A transformers model directory: config.json and model.safetensors holding ``state``
    (``shared.weight`` and, untied, ``lm_head.weight``: the layout of the hub checkpoints)."""
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    drop = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
    tensors = {k: v.contiguous().clone() for k, v in state.items() if k not in drop}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def build_model(flan: bool, seed: int):
    """(config, unique state) of a tiny random T5; ``flan``: gated-GELU, separate LM head."""
    from transformers import T5Config, T5ForConditionalGeneration

    extra = {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False} if flan else {}
    config = T5Config(**TINY, **extra)
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if flan:
        state["lm_head.weight"] = torch.randn_like(state["shared.weight"])
    else:
        state.pop("lm_head.weight")
    for k in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        state.pop(k)
    return config, state


def lora_adapter(folder: Path, state: dict, seed: int, r: int = 2, alpha: int = 4) -> dict:
    """A PEFT LoRA adapter on the q and v projections; returns its dense changes."""
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    tensors, changes = {}, {}
    for key, value in state.items():
        if key.endswith((".q.weight", ".v.weight")):
            module = key[: -len(".weight")]
            a = torch.randn(r, value.shape[1], generator=gen)
            b = torch.randn(value.shape[0], r, generator=gen)
            tensors[f"base_model.model.{module}.lora_A.weight"] = a
            tensors[f"base_model.model.{module}.lora_B.weight"] = b
            changes[key] = b @ a * (alpha / r)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": ["q", "v"],
              "fan_in_fan_out": False, "task_type": "SEQ_2_SEQ_LM"}  # fmt: skip
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return changes


def save_datasets(root: Path, tasks: list[str]) -> None:
    """One local dataset per task (``save_to_disk``), with the hub splits it reads."""
    from evaluation.t5.tasks import task_spec

    datasets.disable_progress_bars()
    rng = random.Random(0)
    for task in tasks:
        spec = task_spec(task)
        names = {spec.splits["train"], spec.splits["test"]}
        if spec.val not in ("heldout", "train_draw"):
            names.add(spec.val)
        splits = {}
        for name in sorted(names):
            rows = [example(task, rng) for _ in range(SIZES.get(name, 40))]
            splits[name] = datasets.Dataset.from_list(rows)
        datasets.DatasetDict(splits).save_to_disk(str(root / task))


@pytest.fixture(scope="session")
def standins(tmp_path_factory):
    """Paths and states of the stand-ins: ``t5`` (v1.0, full experts of NLP_TASKS) and
    ``flan`` (full experts and LoRA adapters of GLUE_TASKS), datasets under ``data``."""
    root = tmp_path_factory.mktemp("t5")
    out = {"root": root}
    for kind, tasks in (("t5", NLP_TASKS), ("flan", GLUE_TASKS)):
        config, state = build_model(kind == "flan", seed=0)
        base = root / "hub" / f"{kind}-tiny"
        save_model(base, config, state)
        tokenizer().save_pretrained(base)
        experts = {t: perturbed(state, 10 + i) for i, t in enumerate(tasks)}
        for task, expert in experts.items():
            save_model(root / "experts" / f"{kind}-tiny" / task, config, expert)
        loras = {
            t: lora_adapter(root / "hub" / f"{kind}-tiny_{t}_lora", state, 20 + i)
            for i, t in enumerate(tasks)
        }
        out[kind] = {"path": base, "state": state, "experts": experts, "loras": loras}
    save_datasets(root / "data", NLP_TASKS + GLUE_TASKS)
    return out


def overrides(standins, kind: str) -> list[str]:
    """Config overrides pointing a T5 zoo and benchmark at the stand-ins."""
    root = standins["root"]
    tasks = NLP_TASKS if kind == "t5" else GLUE_TASKS
    common = [f"model.pretrained={standins[kind]['path']}", f"benchmark.data_root={root / 'data'}",
              f"benchmark.task_names=[{','.join(tasks)}]", "benchmark.heldout_val=8"]  # fmt: skip
    if kind == "t5":
        return [
            "model=t5_large",
            "benchmark=nlp7",
            *common,
            f"model.families.finetuned.id='{root / 'experts' / '{base}' / '{task}'}'",
        ]
    return ["model=flan_t5_base", "benchmark=glue8", *common,
            f"model.families.glue.id='{root / 'experts' / '{base}' / '{task}'}'",
            f"model.families.glue_lora16.id='{root / 'hub' / '{base}_{task}_lora'}'"]  # fmt: skip
