"""Adding a method is one decorated function: the engine reads what it needs from the parameter names.

    python examples/add_a_method.py
"""

import torch

import attnscope as ats
from attnscope.explain import register_method
from attnscope.explain.cam import SPATIAL, weighted_sum


@register_method("absgradcam", "cam")
def absgradcam(acts: torch.Tensor, grads: torch.Tensor, *, relu: bool = True) -> torch.Tensor:
    """Grad-CAM with |∂y/∂A| averaged: ReLU(Σ_k mean_ij |∂y/∂A_k,ij| · A_k)."""
    return weighted_sum(acts, grads.abs().mean(dim=SPATIAL), relu)


model = ats.models.get("smallcnn").eval()
images = torch.rand(2, 3, 64, 64)
maps = ats.explain(model, images, ("gradcam", "absgradcam"))  # one shared forward and backward for both
print(ats.list_methods()["absgradcam"], tuple(maps["absgradcam"].values.shape))
