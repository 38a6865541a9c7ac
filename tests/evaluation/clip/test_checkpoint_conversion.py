"""Safe checkpoint reading and the transformers <-> open_clip key conversion (no downloads)."""

from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, VisionTransformer

from evaluation.checkpoints import CheckpointError, check_matches, read_state_dict, resolve_file
from evaluation.clip.checkpoints import (
    hf_to_open_clip,
    load_visual,
    open_clip_to_hf,
    visual_from_open_clip,
)

WIDTH, LAYERS, HEADS, PATCH, SIZE, EMBED = 64, 2, 2, 8, 32, 32


def tiny_visual(seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    v = VisionTransformer(SIZE, PATCH, WIDTH, LAYERS, HEADS, 4.0, output_dim=EMBED,
                          act_layer=QuickGELU)  # fmt: skip
    with torch.no_grad():  # non-trivial norms and biases, so a swapped key would show
        for name, p in v.named_parameters():
            if "ln" in name or "bias" in name:
                p.add_(0.1 * torch.randn_like(p))
    return v.eval()


def hf_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The image embedding of a transformers CLIPVisionModelWithProjection, written out from
    its architecture: separate q/k/v, pre-layernorm, CLS token, post-layernorm, projection."""
    p = "vision_model."
    h = F.conv2d(x, state[p + "embeddings.patch_embedding.weight"], stride=PATCH)
    h = h.flatten(2).transpose(1, 2)
    cls = state[p + "embeddings.class_embedding"].expand(len(x), 1, -1)
    h = torch.cat([cls, h], 1) + state[p + "embeddings.position_embedding.weight"]
    h = F.layer_norm(h, (WIDTH,), state[p + "pre_layrnorm.weight"], state[p + "pre_layrnorm.bias"])
    for i in range(LAYERS):
        lp = f"{p}encoder.layers.{i}."

        def lin(name, t, lp=lp):
            return F.linear(t, state[lp + name + ".weight"], state[lp + name + ".bias"])

        r = h
        h = F.layer_norm(
            h, (WIDTH,), state[lp + "layer_norm1.weight"], state[lp + "layer_norm1.bias"]
        )
        q, k, v = (lin(f"self_attn.{n}_proj", h).unflatten(-1, (HEADS, -1)).transpose(1, 2)
                   for n in "qkv")  # fmt: skip
        a = torch.softmax(q @ k.transpose(-1, -2) / (WIDTH // HEADS) ** 0.5, -1) @ v
        h = r + lin("self_attn.out_proj", a.transpose(1, 2).flatten(2))
        r = h
        h = F.layer_norm(
            h, (WIDTH,), state[lp + "layer_norm2.weight"], state[lp + "layer_norm2.bias"]
        )
        h = lin("mlp.fc1", h)
        h = r + lin("mlp.fc2", h * torch.sigmoid(1.702 * h))
    pooled = F.layer_norm(h[:, 0], (WIDTH,), state[p + "post_layernorm.weight"],
                          state[p + "post_layernorm.bias"])  # fmt: skip
    return pooled @ state["visual_projection.weight"].T


def test_hf_names_and_round_trip():
    state = tiny_visual().state_dict()
    hf = open_clip_to_hf(state)
    assert {"vision_model.pre_layrnorm.weight", "vision_model.post_layernorm.bias",
            "vision_model.encoder.layers.1.self_attn.k_proj.bias",
            "vision_model.encoder.layers.0.mlp.fc2.weight",
            "vision_model.embeddings.position_embedding.weight",
            "visual_projection.weight"} <= set(hf)  # fmt: skip
    assert hf["visual_projection.weight"].shape == (EMBED, WIDTH)
    back = hf_to_open_clip(hf)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_known_tensor_lands_in_its_open_clip_key():
    hf = open_clip_to_hf(tiny_visual().state_dict())
    known = torch.arange(WIDTH * WIDTH, dtype=torch.float32).view(WIDTH, WIDTH)
    hf["vision_model.encoder.layers.1.self_attn.k_proj.weight"] = known
    hf["visual_projection.weight"] = torch.arange(EMBED * WIDTH, dtype=torch.float32).view(
        EMBED, WIDTH
    )
    oc = hf_to_open_clip(hf)
    assert torch.equal(oc["transformer.resblocks.1.attn.in_proj_weight"][WIDTH : 2 * WIDTH], known)
    assert torch.equal(oc["proj"], hf["visual_projection.weight"].T)


def test_converted_weights_compute_the_same_function():
    visual = tiny_visual()
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        ours = visual(x)
        theirs = hf_forward(open_clip_to_hf(visual.state_dict()), x)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_hf_conversion_drops_text_and_rejects_unknown_vision_keys():
    hf = open_clip_to_hf(tiny_visual().state_dict())
    full = {**hf, "text_model.embeddings.token_embedding.weight": torch.zeros(3, 2),
            "logit_scale": torch.tensor(1.0),
            "vision_model.embeddings.position_ids": torch.arange(17)}  # fmt: skip
    assert set(hf_to_open_clip(full)) == set(tiny_visual().state_dict())
    with pytest.raises(CheckpointError, match="vision_model.encoder.layers.0.adapter.weight"):
        hf_to_open_clip({**hf, "vision_model.encoder.layers.0.adapter.weight": torch.zeros(1)})
    del hf["vision_model.encoder.layers.0.self_attn.v_proj.weight"]
    with pytest.raises(CheckpointError, match=r"layers\.0\.self_attn\.\[qkv\]_proj\.weight"):
        hf_to_open_clip(hf)


def test_mismatched_checkpoint_names_the_keys(tmp_path):
    expected = tiny_visual().state_dict()
    bad = dict(expected)
    del bad["ln_post.bias"]
    bad["transformer.resblocks.2.ln_1.weight"] = torch.zeros(WIDTH)
    bad["proj"] = torch.zeros(WIDTH, 7)
    path = tmp_path / "bad.pt"
    torch.save(bad, path)
    with pytest.raises(CheckpointError) as err:
        load_visual(path, expected, visual_from_open_clip, False, "expert Cars")
    message = str(err.value)
    for part in ("expert Cars", "ln_post.bias", "transformer.resblocks.2.ln_1.weight",
                 "proj (64, 7) (expected (64, 32))"):  # fmt: skip
        assert part in message
    check_matches(expected, expected, "same")  # no error


def test_tall_masks_state_dict_loads_safely(tmp_path):
    visual = tiny_visual().state_dict()
    saved = {f"model.visual.{k}": v for k, v in visual.items()}
    saved["model.token_embedding.weight"] = torch.zeros(5, 4)  # text entries are ignored
    path = tmp_path / "nonlinear_finetuned.pt"
    torch.save(saved, path)
    state = load_visual(path, visual, visual_from_open_clip, False, "expert")
    assert all(torch.equal(state[k], visual[k]) for k in visual)


def _pickled_image_encoder(path, visual: torch.nn.Module) -> None:
    """torch.save of a whole module whose class lives in the authors' package (as the Task
    Arithmetic / TALL masks code can write it); the package is gone when it is read back."""
    package = types.ModuleType("src.models.modeling")

    class ImageEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Module()
            self.model.visual = visual

    ImageEncoder.__module__, ImageEncoder.__qualname__ = package.__name__, "ImageEncoder"
    package.ImageEncoder = ImageEncoder
    names = ("src", "src.models", "src.models.modeling")
    sys.modules.update({n: package if n == names[-1] else types.ModuleType(n) for n in names})
    try:
        torch.save(ImageEncoder(), path)
    finally:
        for n in names:
            del sys.modules[n]


def test_pickle_only_checkpoint_needs_opt_in(tmp_path):
    visual = tiny_visual()
    path = tmp_path / "nonlinear_finetuned.pt"
    _pickled_image_encoder(path, visual)
    with pytest.raises(CheckpointError, match="allow_pickle") as err:
        read_state_dict(path)
    assert "unpickling" in str(err.value) and str(path) in str(err.value)
    state = load_visual(path, visual.state_dict(), visual_from_open_clip, True, "expert")
    assert all(torch.equal(state[k], v) for k, v in visual.state_dict().items())


def test_resolve_file_local_directory_and_offline_hub(tmp_path, monkeypatch):
    (tmp_path / "ViT-B-32" / "CarsVal").mkdir(parents=True)
    target = tmp_path / "ViT-B-32" / "CarsVal" / "nonlinear_finetuned.pt"
    target.write_bytes(b"x")
    names = [
        "ViT-B-32/CarsVal/nonlinear_finetuned.safetensors",
        "ViT-B-32/CarsVal/nonlinear_finetuned.pt",
    ]
    assert resolve_file(str(tmp_path), names) == target
    with pytest.raises(CheckpointError, match="none of"):
        resolve_file(str(tmp_path), ["missing.pt"])
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="expert DTD: cannot fetch.*local directory"):
        resolve_file("nobody/no-such-expert", ["model.safetensors"], what="expert DTD")


@pytest.mark.parametrize("kind", ["zip.pt", "legacy.pt", "model.safetensors", "header.safetensors"])
def test_truncated_checkpoint_names_the_task_and_file(tmp_path, kind):
    from safetensors.torch import save_file

    state = {f"model.visual.{k}": v for k, v in tiny_visual().state_dict().items()}
    path = tmp_path / f"nonlinear_finetuned.{kind.split('.')[1]}"
    if kind == "zip.pt":
        torch.save(state, path)
    elif kind == "legacy.pt":
        torch.save(state, path, _use_new_zipfile_serialization=False)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    raw = path.read_bytes()
    path.write_bytes(raw[:5] if kind == "header.safetensors" else raw[: len(raw) // 2])
    with pytest.raises(CheckpointError) as err:
        load_visual(path, tiny_visual().state_dict(), visual_from_open_clip, False, "expert Cars")
    message = str(err.value)
    assert message.startswith(f"expert Cars: {path} is truncated or corrupt (")
    assert "download or copy it again" in message


def test_open_clip_trainer_checkpoint_loses_its_module_prefix(tmp_path):
    visual = tiny_visual().state_dict()
    state = {f"module.visual.{k}": v for k, v in visual.items()}  # DistributedDataParallel
    state["module.token_embedding.weight"] = torch.zeros(5, 4)
    path = tmp_path / "epoch_3.pt"  # open_clip's training script layout
    torch.save({"epoch": 3, "name": "run", "state_dict": state, "optimizer": {"lr": 0.1}}, path)
    loaded = load_visual(path, visual, visual_from_open_clip, False, "expert Cars")
    assert all(torch.equal(loaded[k], v) for k, v in visual.items())
    assert set(read_state_dict(path)) == {k[len("module.") :] for k in state}
