"""Transformer relevance on the transformers people have: Hugging Face, torchvision Swin, open_clip, a CLIP wrapper.

    python examples/transformers_any.py

Every model is built with random weights from a config (nothing is downloaded). The same calls work on
trained weights; which attention implementations attnscope reads is `attnscope.explain.adapters.ATTENTION`.
"""

from __future__ import annotations

import torch
import torchvision
import transformers

import attnscope as ats

METHODS = ("rollout", "grad-rollout", "chefer", "attnlrp", "legrad")


class ImageFeatures(torch.nn.Module):
    """A CLIP model as people wrap it for images: `get_image_features` (its text tower never runs)."""

    def __init__(self, clip: torch.nn.Module) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.clip.get_image_features(pixel_values=images)
        return out if isinstance(out, torch.Tensor) else out.pooler_output


def main() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)

    # A Hugging Face ViT: its SDPA attention is switched to the eager path for the call and back.
    vit = transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=5)).eval()
    maps = ats.explain(vit, x, (*METHODS, "gradcam"))
    print(f"hf vit: {', '.join(f'{m} {tuple(maps[m].lowres.shape)}' for m in METHODS if maps[m].lowres is not None)}")
    print(f"hf vit: gradcam at {maps['gradcam'].layer} ({maps['gradcam'].meta['layer_choice']})")

    # torchvision's Swin: shifted windows and patch merging are composed on the image grid (docs/vit.md).
    swin = torchvision.models.swin_transformer.SwinTransformer([4, 4], 16, [2, 2], [1, 2], [2, 2], num_classes=5)
    maps = ats.explain(swin.eval(), x, METHODS)
    print(f"swin: rollout on the first stage's grid {tuple(maps['rollout'].lowres.shape)}, "
          f"legrad on the last stage's {tuple(maps['legrad'].lowres.shape)}")
    try:
        ats.explain(swin, x, "flow")
    except ats.errors.NotApplicableError as refusal:
        print(f"swin: flow refused: {str(refusal)[:70]}...")

    # A CLIP model called as get_image_features: only the image tower's attention runs, so only it is read.
    clip = transformers.CLIPModel(transformers.CLIPConfig(
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64),
        text_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
        projection_dim=16)).eval()
    maps = ats.explain(ImageFeatures(clip), x, METHODS, targets=lambda embedding: embedding[:, 0])
    print(f"clip image features: chefer {tuple(maps['chefer'].lowres.shape)}")


if __name__ == "__main__":
    main()
