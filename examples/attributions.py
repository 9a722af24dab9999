"""The method families of attnscope on one model and one batch: CAMs, relevance, references, masks, wrappers.

    PYTHONPATH=src python examples/attributions.py        # random weights: shows the calls, not good maps

Every call returns an `Explanation` of `AttentionMap`s (raw, signed, at the input's resolution).
"""

import torch

import attnscope as ats

torch.manual_seed(0)
cnn = ats.models.get("smallcnn").eval()
x = torch.rand(4, 3, 64, 64)

maps = ats.explain(cnn, x, ["gradcam", "fullgrad", "lrp", "deeplift", "eigengradcam", "smoothgrad:gradcam",
                            "vargrad:saliency", "fuse:layercam"],
                   options={"lrp": {"composite": "epsilon-gamma-box"},
                            "smoothgrad:gradcam": {"n": 8, "sigma": 0.1},
                            "vargrad:saliency": {"n": 8},
                            "fuse:layercam": {"layers": ["features.2", "features.3"]}})
for name, m in maps.items():
    print(f"{name:20s} {tuple(m.values.shape)}  max {float(m.values.abs().max()):.3g}")

rise = ats.explain(cnn, x[:1], "rise", options={"rise": {"n": 500}})["rise"]  # 500 masked passes
print(f"{'rise':20s} {tuple(rise.values.shape)}")

vit = ats.models.get("vit").eval()
tmaps = ats.explain(vit, x, ["rollout", "grad-rollout", "attnlrp", "chefer", "legrad"])
for name, m in tmaps.items():
    print(f"{name:20s} {tuple(m.values.shape)}")
