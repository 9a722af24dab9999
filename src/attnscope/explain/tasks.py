"""Targets for tasks beyond classification: objects passed as `explain(..., targets=...)`.

Each is a callable target (`targets.py`): it turns the model's output into one score per image,
or K per image, and the methods explain that score.

- `BoxScore`: detection (torchvision Faster R-CNN, RetinaNet, FCOS: a list of {"boxes", "scores",
  "labels"} per image): the score of the detection of the given class that overlaps the given box
  best, by IoU — as pytorch-grad-cam's `FasterRCNNBoxScoreTarget`, without its sum over boxes.
- `RegionScore`: semantic segmentation (torchvision FCN, DeepLabV3, LR-ASPP: `out` of their dict,
  picked by `explain`): the summed logit of a class over a pixel region (Vinogradova et al. 2020,
  Seg-Grad-CAM).
- `Similarity`: embeddings (image retrieval, CLIP-style image towers): the cosine similarity of
  the image's embedding to reference embeddings.

Targets with one value per image (a box, a region, a reference per image) score the shared pass,
whose rows are the images; methods that rerun the model on many inputs per image need targets
that hold one value for all images (they refuse otherwise).
"""

from __future__ import annotations

import torch

from attnscope.errors import InputError


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU (M, N) of boxes a (M, 4) and b (N, 4), (x0, y0, x1, y1): |a ∩ b| / |a ∪ b|."""
    lo = torch.maximum(a[:, None, :2], b[None, :, :2])
    hi = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (hi - lo).clamp_min(0).prod(-1)
    area = lambda t: (t[:, 2:] - t[:, :2]).clamp_min(0).prod(-1)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def _per_image(values: torch.Tensor, n: int, what: str, row_dims: int) -> torch.Tensor:
    """`values` with one entry per image (n, ...): broadcast if shared, checked if given per image."""
    if values.dim() == row_dims:  # one value for every image
        return values.expand(n, *values.shape)
    if values.shape[0] != n:
        raise InputError(f"{what} holds {values.shape[0]} entries for {n} model outputs; give one per image, "
                         "or one for all (methods that rerun the model on many inputs per image need one for all)")
    return values


class BoxScore:
    """Detection target: score of the detection of class `labels` that best overlaps `boxes` (IoU ≥ `iou`).

    `boxes`: (4,) one box for every image, (B, 4) one per image, or (B, K, 4) K per image (scores
    (B, K)); `labels`: an int, (B,) or (B, K) likewise. No detection of that class at IoU ≥ `iou`
    scores 0 (nothing to explain).
    """

    def __init__(self, boxes: torch.Tensor, labels: int | torch.Tensor, iou: float = 0.5) -> None:
        boxes = torch.as_tensor(boxes, dtype=torch.float32)
        if boxes.dim() not in (1, 2, 3) or boxes.shape[-1] != 4:
            raise InputError(f"BoxScore boxes must be (4,), (B, 4) or (B, K, 4), got {tuple(boxes.shape)}")
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != boxes.shape[:-1]:
            raise InputError(f"BoxScore labels {tuple(labels.shape)} must match the boxes {tuple(boxes.shape[:-1])}")
        if not 0 <= iou <= 1:
            raise InputError(f"BoxScore iou must be in [0, 1], got {iou}")
        flat = boxes.reshape(-1, 4)
        bad = ~torch.isfinite(flat).all(1) | (flat[:, 2] <= flat[:, 0]) | (flat[:, 3] <= flat[:, 1])
        if bad.any():  # IoU with a box of no area is 0 (or NaN): the score would be 0 whatever the detector found
            box = flat[int(torch.nonzero(bad)[0])].tolist()
            raise InputError(f"BoxScore boxes must be (x1, y1, x2, y2) with x2 > x1 and y2 > y1 (finite), got "
                             f"{box}{f' and {int(bad.sum()) - 1} more' if bad.sum() > 1 else ''}")
        self.boxes, self.labels, self.iou = boxes, labels, iou

    def __call__(self, output: object) -> torch.Tensor:
        detections = _detections(output)
        n = len(detections)
        shared = self.boxes.dim() == 1
        boxes = _per_image(self.boxes, n, "BoxScore boxes", 1)
        labels = _per_image(self.labels, n, "BoxScore labels", 0)
        per_k = boxes.dim() == 3 and not shared
        scores = torch.stack([self._image(d, boxes[i].view(-1, 4), labels[i].view(-1))
                              for i, d in enumerate(detections)])  # (n, K)
        return scores if per_k else scores[:, 0]

    def _image(self, det: dict, boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(K,) the best-matching detection's score for each of K boxes of one image."""
        found, score = det["boxes"], det["scores"]
        if len(found) == 0:
            return score.new_zeros(len(boxes))
        overlap = box_iou(boxes.to(found), found)  # (K, D)
        same = labels.to(det["labels"].device)[:, None] == det["labels"][None, :]
        overlap = torch.where(same & (overlap >= self.iou), overlap, torch.full_like(overlap, -1.0))
        best = overlap.argmax(dim=1)  # (K,)
        hit = overlap.gather(1, best[:, None])[:, 0] >= 0
        return torch.where(hit, score[best], torch.zeros_like(score[best]))


def _detections(output: object) -> list[dict]:
    if not isinstance(output, (list, tuple)) or not all(
            isinstance(d, dict) and {"boxes", "scores", "labels"} <= d.keys() for d in output):
        raise InputError(f"BoxScore needs a detector's output, a list of {{'boxes', 'scores', 'labels'}} per image "
                         f"(torchvision Faster R-CNN, RetinaNet, FCOS in eval mode), got {type(output).__name__}")
    return list(output)


class RegionScore:
    """Segmentation target: Σ over the region's pixels of class `label`'s logit, from output (B, classes, H, W).

    `mask`: None (every pixel), a bool mask (H, W) for every image, or (B, H, W) one per image;
    `label`: an int, or (B,) one per image.
    """

    def __init__(self, label: int | torch.Tensor, mask: torch.Tensor | None = None) -> None:
        self.label = torch.as_tensor(label, dtype=torch.long)
        if self.label.dim() > 1:
            raise InputError(f"RegionScore label must be an int or (B,), got {tuple(self.label.shape)}")
        if mask is not None and (mask.dtype != torch.bool or mask.dim() not in (2, 3)):
            raise InputError(f"RegionScore mask must be a bool tensor (H, W) or (B, H, W), got {mask.dtype} "
                             f"{tuple(mask.shape)}")
        self.mask = mask

    def __call__(self, output: object) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise InputError(f"RegionScore needs per-pixel logits (B, classes, H, W) (a segmenter's 'out'), got "
                             f"{shape}")
        n, classes = output.shape[:2]
        label = _per_image(self.label, n, "RegionScore label", 0).to(output.device)
        if ((label < 0) | (label >= classes)).any():
            raise InputError(f"RegionScore class {int(label.max())} is out of range for {classes} classes")
        logits = output[torch.arange(n, device=output.device), label]  # (n, H, W)
        if self.mask is None:
            return logits.flatten(1).sum(1)
        mask = _per_image(self.mask, n, "RegionScore mask", 2).to(output.device)
        if mask.shape[1:] != logits.shape[1:]:
            raise InputError(f"RegionScore mask {tuple(mask.shape[1:])} does not match the output's pixels "
                             f"{tuple(logits.shape[1:])}")
        return (logits * mask).flatten(1).sum(1)


class Similarity:
    """Embedding target: cos(e, r) of the image's embedding e (B, D) with reference embeddings r.

    `reference`: (D,) one for every image → scores (B,); (K, D) K references → scores (B, K)
    (K maps per image, one call).
    """

    def __init__(self, reference: torch.Tensor) -> None:
        if not (isinstance(reference, torch.Tensor) and reference.dim() in (1, 2) and reference.is_floating_point()):
            raise InputError("Similarity reference must be a float tensor (D,) or (K, D)")
        self.reference = reference.detach()

    def __call__(self, output: object) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.dim() != 2:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise InputError(f"Similarity needs embeddings (B, D) from the model, got {shape}; pass output= to "
                             "pick them")
        ref = self.reference.to(output)
        if ref.shape[-1] != output.shape[1]:
            raise InputError(f"Similarity reference has {ref.shape[-1]} dimensions, the embeddings {output.shape[1]}")
        e = torch.nn.functional.normalize(output, dim=1)
        r = torch.nn.functional.normalize(ref.view(-1, ref.shape[-1]), dim=1)
        scores = e @ r.T  # (B, K)
        return scores[:, 0] if ref.dim() == 1 else scores
