"""Users' own images: a classification data set in ImageFolder layout, and loose images to explain.

`ImageFolderData(root)` reads `root/<class>/<image>` (classes sorted by name, images found
recursively); `load_images(path)` reads one image, a folder of images or a list of paths into one
batch. Images come back as float RGB in [0, 1]; grey is repeated to three channels and
transparency is composited onto white. Problems name the file: a missing folder, a class without
images, a file that is not an image or is corrupt, and images of different sizes when no `size`
was given to resize them to.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from attnscope.console import brief_fields
from attnscope.errors import DataError, InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
_ACCEPTED = ", ".join(IMAGE_EXTENSIONS)
SizeSpec = int | tuple[int, int] | None
# What PIL raises for unreadable, corrupt, truncated or oversized ("decompression bomb") files.
_PIL_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


class FolderSample(NamedTuple):
    image: torch.Tensor  # (3, H, W) float in [0, 1]
    label: int


    def __repr__(self) -> str:
        return brief_fields(self)


class ImageFolderData(Dataset):
    """Images under `root/<class>/` with the class's index (classes sorted by name) as label.

    `size` (an int or (H, W)) resizes every image; without it all images must share one size.
    A file that is not a readable image raises `DataError` naming it, unless `skip_bad=True`,
    which leaves it out and lists it in `skipped` (with a warning). `verify=True` decodes every
    image up front (slower) so that truncated files are found before training, not during it.
    """

    kind = "classification"

    def __init__(
        self,
        root: str | Path,
        size: SizeSpec = None,
        skip_bad: bool = False,
        verify: bool = False,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.root = _existing_dir(root, "image folder")
        self.size = _size(size)
        self.transform = transform
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not _hidden(p, self.root))
        if not self.classes:
            raise DataError(f"no class folders in {self.root} (expected {self.root}/<class>/<image>)")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.num_classes = len(self.classes)
        self.class_names = tuple(self.classes)

        samples: list[tuple[Path, int]] = []
        skipped: list[tuple[Path, str]] = []
        shapes: dict[tuple[int, int], Path] = {}  # (H, W) → first file of that size
        for name in self.classes:
            found = 0
            for path in _files_under(self.root / name, self.root):
                problem = _check(path, verify)
                if isinstance(problem, str):
                    if not skip_bad:
                        raise DataError(f"{problem}; pass skip_bad=True to leave such files out")
                    skipped.append((path, problem))
                    continue
                shapes.setdefault(problem, path)
                samples.append((path, self.class_to_idx[name]))
                found += 1
            if found == 0:
                raise DataError(f"class folder {self.root / name} holds no images ({_ACCEPTED})")
        if self.size is None:
            same_size(shapes)
        self.samples, self.skipped = samples, skipped
        self.targets = [label for _, label in samples]
        if skipped:
            listed = "; ".join(f"{p}: {why}" for p, why in skipped)
            warnings.warn(f"skipped {len(skipped)} unreadable files: {listed}", stacklevel=2)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> FolderSample:
        path, label = self.samples[index]
        image = read_image(path, self.size)  # (3, H, W)
        return FolderSample(self.transform(image) if self.transform else image, label)


def load_images(
    path: str | Path | Sequence[str | Path], size: SizeSpec = None, skip_bad: bool = False
) -> tuple[torch.Tensor, list[Path]]:
    """`(images (B, 3, H, W) in [0, 1], their paths)` from one image, a folder's images, or a list.

    A folder contributes the files directly in it with an image extension (sorted); other files
    are ignored. Images of different sizes need `size`. Unreadable images raise `DataError`
    naming the file, or with `skip_bad=True` are left out with a warning.
    """
    paths = image_paths(path)
    size = _size(size)
    images: list[torch.Tensor] = []
    kept: list[Path] = []
    skipped: list[str] = []
    for p in paths:
        try:
            images.append(read_image(p, size))
            kept.append(p)
        except DataError as e:
            if not skip_bad:
                raise
            skipped.append(str(e))
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable files: {'; '.join(skipped)}", stacklevel=2)
    if not images:
        raise DataError(f"no readable images in {path}")
    if size is None:
        shapes: dict[tuple[int, int], Path] = {}
        for im, p in zip(images, kept, strict=True):
            shapes.setdefault((im.shape[1], im.shape[2]), p)
        same_size(shapes)
    return torch.stack(images), kept  # (B, 3, H, W)


def read_image(path: str | Path, size: SizeSpec = None) -> torch.Tensor:
    """One image as float RGB (3, H, W) in [0, 1], resized to `size` (int or (H, W)) if given."""
    size = _size(size)
    try:
        with Image.open(path) as im:
            im.load()
            rgb = _to_rgb(im)
    except _PIL_ERRORS as e:
        raise DataError(f"cannot read image {path}: {e}") from None
    if size is not None and rgb.size != (size[1], size[0]):
        rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    array = np.asarray(rgb, dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()  # (3, H, W)


def _to_rgb(im):
    """8-bit RGB; transparency composited onto white, 16-bit grey scaled down rather than clipped.

    Mode "I" (32-bit integer grey) is read as 16-bit when any value exceeds 255, else as 8-bit.
    Mode "F" (32-bit float grey, e.g. a float TIFF) is read as intensities in [0, 1]; values outside
    [0, 1] or not finite have no agreed meaning and are refused (PIL's own conversion clips them to
    0 or 1, which made such images all black).
    """
    if im.mode == "F":
        values = np.asarray(im, dtype=np.float64)
        finite = np.isfinite(values)
        if not finite.all() or values.min(initial=0.0) < 0 or values.max(initial=0.0) > 1:
            shown = values[finite]
            span = f"{shown.min():.4g}..{shown.max():.4g}" if shown.size else "none finite"
            raise DataError(f"{getattr(im, 'filename', '') or 'image'}: 32-bit float image with values {span}"
                            f"{'' if finite.all() else ' and NaN/inf'}; attnscope reads float images as [0, 1] "
                            "intensities: rescale it to [0, 1] or save it as 8/16-bit")
        return Image.fromarray((values * 255.0 + 0.5).astype(np.uint8), mode="L").convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = im.mode.startswith("I;16") or float(np.asarray(im).max()) > 255
        top = 65535.0 if wide else 255.0
        grey = np.clip(np.asarray(im, dtype=np.float64) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _check(path: Path, verify: bool) -> tuple[int, int] | str:
    """The (H, W) of the image at `path`, or why it is not a readable image."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"{path} is not an image file (accepted: {_ACCEPTED})"
    try:
        with Image.open(path) as im:
            if verify:
                im.load()
            return im.size[1], im.size[0]
    except _PIL_ERRORS as e:
        return f"cannot read image {path}: {e}"


def same_size(shapes: dict[tuple[int, int], Path], hint: str = "pass size=(H, W) to resize them") -> None:
    """Raise naming two files of different sizes, if there are any, and `hint` (what to pass instead)."""
    if len(shapes) > 1:
        (s1, p1), (s2, p2) = list(shapes.items())[:2]
        raise DataError(f"images differ in size: {p1} is {s1[0]}x{s1[1]} (HxW) but {p2} is {s2[0]}x{s2[1]}; {hint}")


def image_paths(path: str | Path | Sequence[str | Path]) -> list[Path]:
    """One file, a folder's image files (sorted; not recursive) or a list of files, checked to exist."""
    if isinstance(path, (str, Path)):
        p = Path(path)
        if not p.exists():
            raise DataError(f"no such file or folder: {p}")
        if p.is_file():
            return [p]
        found = [q for q in sorted(p.iterdir()) if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS]
        if not found:
            raise DataError(f"no images in {p} ({_ACCEPTED})")
        return found
    paths = [Path(q) for q in path]
    if not paths:
        raise InputError("no image paths given")
    missing = [str(q) for q in paths if not q.is_file()]
    if missing:
        raise DataError(f"no such image file: {', '.join(missing)}")
    return paths


def _existing_dir(root: str | Path, what: str) -> Path:
    root = Path(root)
    if not root.exists():
        raise DataError(f"{what} {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{what} {root} is not a folder")
    return root


def _files_under(folder: Path, root: Path) -> list[Path]:
    """Files anywhere under `folder`, sorted, leaving out hidden ones (".name" below `root`)."""
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and not _hidden(p, root)]


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _size(size: SizeSpec) -> tuple[int, int] | None:
    """`size` as (H, W): an int means square."""
    if size is None:
        return None
    hw = [size, size] if _is_int(size) else list(size) if isinstance(size, (tuple, list)) else []
    if len(hw) != 2 or not all(_is_int(v) and v > 0 for v in hw):
        raise InputError(f"size must be a positive int or (H, W), got {size!r}")
    return int(hw[0]), int(hw[1])


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)
