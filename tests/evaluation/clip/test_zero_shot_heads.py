"""Zero-shot heads: the CLIP formula, and the checksummed head cache."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from evaluation.clip import heads


class TextStub(nn.Module):
    """``encode_text``: a fixed linear map of the tokens; ``logit_scale`` as in CLIP."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Parameter(torch.randn(4, 3, generator=torch.Generator().manual_seed(0)))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(100.0)))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.float() @ self.proj


def tokenizer(texts: list[str]) -> torch.Tensor:
    return torch.tensor([[len(t), t.count("a"), t.count("o"), 1] for t in texts])


CLASSES, TEMPLATES = ("cat", "dog", "horse"), ("a photo of a {}.", "{}")


def test_head_is_the_normalised_mean_of_normalised_prompt_embeddings():
    model = TextStub()
    head = heads.zeroshot_head(model, tokenizer, CLASSES, TEMPLATES)
    with torch.no_grad():
        for c, name in enumerate(CLASSES):
            emb = model.encode_text(tokenizer([t.format(name) for t in TEMPLATES]))
            mean = (emb / emb.norm(dim=-1, keepdim=True)).mean(0)
            torch.testing.assert_close(head.weight[c], mean / mean.norm())
    assert head.scale == pytest.approx(100.0)
    features = torch.randn(5, 3)
    expected = 100.0 * (features / features.norm(dim=-1, keepdim=True)) @ head.weight.T
    torch.testing.assert_close(head(features), expected)
    with pytest.raises(ValueError, match="at least one class name and one template"):
        heads.zeroshot_head(model, tokenizer, (), TEMPLATES)


def test_cache_is_reused_checked_and_keyed_by_model(tmp_path, monkeypatch):
    model = TextStub()
    first = heads.cached_zeroshot_head(model, tokenizer, CLASSES, TEMPLATES, tmp_path, "m1")
    (path,) = (tmp_path / "heads").glob("*.safetensors")

    def no_encoding(*args, **kwargs):
        raise AssertionError("a cached head was encoded again")

    with monkeypatch.context() as m:
        m.setattr(heads, "zeroshot_head", no_encoding)
        again = heads.cached_zeroshot_head(model, tokenizer, CLASSES, TEMPLATES, tmp_path, "m1")
    assert torch.equal(again.weight, first.weight) and again.scale == first.scale

    raw = bytearray(path.read_bytes())
    raw[-4] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match=f"{path.name} fails its checksum"):
        rebuilt = heads.cached_zeroshot_head(model, tokenizer, CLASSES, TEMPLATES, tmp_path, "m1")
    assert torch.equal(rebuilt.weight, first.weight)

    heads.cached_zeroshot_head(model, tokenizer, CLASSES, TEMPLATES, tmp_path, "m2")
    assert len(list((tmp_path / "heads").glob("*.safetensors"))) == 2  # another model's head


def test_head_cache_with_zeroed_weights_is_rebuilt(tmp_path):
    from safetensors.torch import load_file, save_file

    model = TextStub()
    first = heads.cached_zeroshot_head(model, tokenizer, CLASSES, TEMPLATES, tmp_path, "m1", "t")
    (path,) = (tmp_path / "heads").glob("*.safetensors")
    save_file({k: torch.zeros_like(v) for k, v in load_file(path).items()}, str(path))
    with pytest.warns(UserWarning, match=f"zero-shot head cache file {path} fails its checksum"):
        again = heads.cached_zeroshot_head(model, tokenizer, CLASSES, TEMPLATES, tmp_path, "m1")
    assert torch.equal(again.weight, first.weight) and again.scale == first.scale


def test_bad_templates_name_the_task():
    with pytest.raises(ValueError, match="task pets: prompt template 'a photo' must hold"):
        heads.zeroshot_head(TextStub(), tokenizer, CLASSES, ("a photo",), task="pets")
