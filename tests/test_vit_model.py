"""TinyViT, the fused → explicit attention switch (TinyViT, torchvision, timm) and token layouts."""

import json

import pytest
import torch
import torchvision
from torch import nn

from attnscope import models
from attnscope.cli import main
from attnscope.errors import InputError, NotApplicableError
from attnscope.explain.attention import attention_modules, explicit_attention, no_attention_reason
from attnscope.explain.tokens import TokenLayout, detect_layout
from attnscope.models import checkpoint


def tiny_vit(**cfg) -> nn.Module:
    return models.get("vit", **{"image_size": 16, "patch_size": 4, "dim": 16, "depth": 2, "heads": 2, **cfg}).eval()


def torchvision_vit() -> nn.Module:
    return torchvision.models.vision_transformer.VisionTransformer(
        image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    ).eval()


def timm_vit(**cfg) -> nn.Module:
    timm = pytest.importorskip("timm")
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=16, patch_size=4, depth=2,
        embed_dim=16, num_heads=2, **cfg,
    ).eval()


def recorded(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[str, torch.Tensor]]]:
    """Logits on the explicit path and each layer's weights, in the order the probes fired."""
    seen: list[tuple[str, torch.Tensor]] = []
    with explicit_attention(model) as layers:
        handles = [
            layer.probe.register_forward_hook(lambda _m, _i, out, name=layer.name: seen.append((name, out)))
            for layer in layers
        ]
        try:
            logits = model(x)
        finally:
            for h in handles:
                h.remove()
    return logits, seen


def test_zero_query_key_weights_give_uniform_attention():
    model = tiny_vit(registers=1)  # T = 1 + 1 + 4·4 = 18
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight.zero_()
            block.attn.qkv.bias.zero_()
    _, seen = recorded(model, torch.rand(2, 3, 16, 16))
    assert [name for name, _ in seen] == ["blocks.0.attn", "blocks.1.attn"]
    for _, attn in seen:
        assert attn.shape == (2, 2, 18, 18)
        torch.testing.assert_close(attn, torch.full_like(attn, 1 / 18))


@pytest.mark.parametrize("build", [tiny_vit, torchvision_vit, timm_vit], ids=["tinyvit", "torchvision", "timm"])
def test_explicit_path_gives_the_fused_logits_and_is_restored(build):
    model = build()
    x = torch.rand(3, 3, 16, 16)
    fused = model(x)
    explicit, seen = recorded(model, x)
    torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=1e-5)
    names = [n for n, _ in attention_modules(model)]
    assert [n for n, _ in seen] == names and len(names) == 2  # one record per layer, in forward order
    for _, attn in seen:
        torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]))
    assert all(getattr(m, "fused_attn", True) for _, m in attention_modules(model))
    assert all("forward" not in m.__dict__ for m in model.modules())
    torch.testing.assert_close(model(x), fused, atol=0, rtol=0)


@pytest.mark.parametrize("build", [tiny_vit, torchvision_vit], ids=["tinyvit", "torchvision"])
def test_attention_mode_is_restored_on_error(build):
    model = build()
    with pytest.raises(RuntimeError, match="boom"), explicit_attention(model):
        raise RuntimeError("boom")
    assert all(getattr(m, "fused_attn", True) for m in model.modules())
    assert all("forward" not in m.__dict__ for m in model.modules())
    with pytest.raises((InputError, AssertionError)), explicit_attention(model):  # a forward that fails
        model(torch.rand(1, 3, 8, 8))
    assert all(getattr(m, "fused_attn", True) for m in model.modules())
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_models_without_attention_get_a_reason():
    cnn = models.get("smallcnn", widths=[4, 8])
    assert "no attention layers" in no_attention_reason(cnn)
    with pytest.raises(NotApplicableError, match="no attention layers"), explicit_attention(cnn):
        pass
    assert no_attention_reason(tiny_vit()) is None and no_attention_reason(torchvision_vit()) is None


def test_token_layouts_are_read_from_the_model():
    assert detect_layout(tiny_vit(registers=2), 19, (16, 16)) == TokenLayout(3, (4, 4), 0)
    assert detect_layout(torchvision_vit(), 17, (16, 16)) == TokenLayout(1, (4, 4), 0)
    assert detect_layout(nn.Identity(), 16, (16, 16)) == TokenLayout(0, (4, 4), None)  # declares nothing
    assert detect_layout(nn.Identity(), 9, (32, 64)) == TokenLayout(1, (2, 4), 0)  # non-square image
    with pytest.raises(InputError, match="num_prefix_tokens"):
        detect_layout(nn.Identity(), 20, (16, 16))  # 4×4 + 4 registers the model does not declare
    with pytest.raises(InputError, match="3 extra tokens"):
        detect_layout(tiny_vit(registers=2), 17, (16, 16))


def test_timm_layout_with_registers():
    model = timm_vit(reg_tokens=3)
    assert detect_layout(model, 20, (16, 16)) == TokenLayout(4, (4, 4), 0)


def test_layout_reshapes_tokens_in_raster_order():
    layout = TokenLayout(2, (2, 3), 0)
    tokens = torch.arange(8.0)[None, :, None].expand(1, 8, 2)  # (1, T=8, D=2): token index as feature
    torch.testing.assert_close(layout.to_feature_map(tokens)[0, 1], torch.tensor([[2.0, 3, 4], [5, 6, 7]]))
    torch.testing.assert_close(layout.to_grid(torch.arange(8.0)[None])[0], torch.tensor([[2.0, 3, 4], [5, 6, 7]]))
    with pytest.raises(InputError, match="do not fit"):
        layout.to_grid(torch.zeros(1, 9))


def test_tinyvit_rejects_other_image_sizes():
    with pytest.raises(InputError, match=r"\(B, C, 16, 16\)"):
        tiny_vit()(torch.rand(1, 3, 32, 32))
    with pytest.raises(InputError, match="multiple of patch_size"):
        models.get("vit", image_size=30, patch_size=8)


def test_train_vit_from_the_cli_and_reload_it(tmp_path):
    out = tmp_path / "run"
    main(["train", "--model", "vit", "--data", "clutter", "--out", str(out), "--n", "64", "--n-test", "32",
          "--epochs", "1", "--batch-size", "32", "--quiet", "--model-opt", "dim=16", "--model-opt", "depth=1",
          "--model-opt", "image_size=32", "--data-opt", "size=32", "--data-opt", "digit_size=[12,16]"])
    record = json.loads((out / "metrics.jsonl").read_text())
    assert record["epoch"] == 1 and 0 <= record["test_acc"] <= 1
    model, header = checkpoint.load(out)
    assert header["model"]["config"]["patch_size"] == 8 and model.grid == 4
    x = torch.rand(2, 3, 32, 32)
    fused = model.eval()(x)
    torch.testing.assert_close(recorded(model, x)[0], fused, atol=1e-5, rtol=1e-5)

