"""ImageFolderData and load_images: exact pixels back, RGB from any mode, and every error names its file."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from attnscope.data import ImageFolderData, load_images, read_image
from attnscope.errors import DataError, InputError

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)  # (H, W, 3)
GREY = RNG.integers(0, 256, (6, 8), dtype=np.uint8)


def _rgba() -> np.ndarray:
    px = np.zeros((6, 8, 4), dtype=np.uint8)
    px[..., 0], px[..., 3] = 200, 255  # opaque red-ish
    px[:, :4, 3] = 0  # left half fully transparent (over white → white)
    px[0, 0, :3] = 10  # hidden colour under a transparent pixel must not show
    return px


def _tree(root):
    """root/cat: a.png (RGB), b.bmp (RGB); root/dog: c.png (grey), sub/d.png (RGBA); hidden files."""
    (root / "cat").mkdir(parents=True)
    (root / "dog" / "sub").mkdir(parents=True)
    Image.fromarray(RGB).save(root / "cat" / "a.png")
    Image.fromarray(RGB[::-1].copy()).save(root / "cat" / "b.bmp")
    Image.fromarray(GREY).save(root / "dog" / "c.png")
    Image.fromarray(_rgba(), mode="RGBA").save(root / "dog" / "sub" / "d.png")
    (root / "dog" / ".DS_Store").write_bytes(b"\0junk")
    (root / ".hidden").mkdir()
    return root


def test_round_trip_gives_exact_pixels_labels_and_rgb_from_grey_and_rgba(tmp_path):
    ds = ImageFolderData(_tree(tmp_path))
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2 and ds.kind == "classification"
    assert [p.name for p, _ in ds.samples] == ["a.png", "b.bmp", "c.png", "d.png"]
    assert ds.targets == [0, 0, 1, 1]
    images = [ds[i] for i in range(len(ds))]
    assert all(im.shape == (3, 6, 8) and im.dtype == torch.float32 for im, _ in images)
    assert torch.equal(images[0].image, torch.from_numpy(RGB).permute(2, 0, 1).float() / 255)
    assert torch.equal(images[1].image, torch.from_numpy(RGB[::-1].copy()).permute(2, 0, 1).float() / 255)
    assert torch.equal(images[2].image, (torch.from_numpy(GREY).float() / 255).expand(3, 6, 8))
    rgba = images[3].image
    assert (rgba[:, :, :4] == 1).all()  # transparent → white, hidden colour gone
    red = torch.tensor([200.0, 0.0, 0.0])[:, None, None] / 255
    assert torch.allclose(rgba[:, :, 4:], red.expand(3, 6, 4))
    assert images[3].label == 1


def test_size_resizes_and_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.full((10, 12, 3), 90, dtype=np.uint8)).save(flat / "x.png")
    Image.fromarray(np.full((5, 5), 32768, dtype=np.uint16)).save(flat / "y.png")  # 16-bit grey
    images, paths = load_images(flat, size=(4, 7))
    assert images.shape == (2, 3, 4, 7) and [p.name for p in paths] == ["x.png", "y.png"]
    assert torch.allclose(images[0], torch.full((3, 4, 7), 90 / 255))  # a flat image stays flat
    assert torch.allclose(images[1], torch.full((3, 4, 7), 128 / 255))  # 32768 / 65535 → 128 / 255
    ds = ImageFolderData(_tree(tmp_path / "tree"), size=3, transform=lambda t: 1 - t)
    assert ds[0].image.shape == (3, 3, 3) and ds[0].image.max() <= 1


def test_load_images_from_a_folder_a_file_and_a_list(tmp_path):
    _tree(tmp_path)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")  # ignored: not an image extension
    images, paths = load_images(tmp_path / "cat")
    assert images.shape == (2, 3, 6, 8) and [p.name for p in paths] == ["a.png", "b.bmp"]
    one, [path] = load_images(tmp_path / "cat" / "a.png")
    assert torch.equal(one[0], images[0]) and path.name == "a.png"
    both, _ = load_images([tmp_path / "cat" / "b.bmp", str(tmp_path / "dog" / "c.png")])
    assert torch.equal(both[0], images[1]) and both.shape == (2, 3, 6, 8)


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderData(tmp_path / "nope")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match="not a folder"):
        ImageFolderData(tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        ImageFolderData(tmp_path / "empty")
    root = _tree(tmp_path / "root")
    (root / "bird").mkdir()
    with pytest.raises(DataError, match=r"bird holds no images"):
        ImageFolderData(root)
    with pytest.raises(InputError, match="size"):
        ImageFolderData(root, size=(3, 0))


def test_bad_files_raise_naming_them_or_are_skipped_and_listed(tmp_path):
    root = _tree(tmp_path)
    (root / "cat" / "notes.txt").write_text("hello")
    (root / "dog" / "broken.png").write_bytes(b"definitely not a png")
    with pytest.raises(DataError, match="notes.txt is not an image file"):
        ImageFolderData(root)
    (root / "cat" / "notes.txt").unlink()
    with pytest.raises(DataError, match="broken.png"):
        ImageFolderData(root)
    (root / "cat" / "notes.txt").write_text("hello")
    with pytest.warns(UserWarning, match="skipped 2 unreadable files") as caught:
        ds = ImageFolderData(root, skip_bad=True)
    assert "notes.txt" in str(caught[0].message) and "broken.png" in str(caught[0].message)
    assert sorted(p.name for p, _ in ds.skipped) == ["broken.png", "notes.txt"] and len(ds) == 4
    with pytest.raises(DataError, match="broken.png"):
        load_images(root / "dog")
    with pytest.warns(UserWarning, match="broken.png"):
        images, paths = load_images(root / "dog", skip_bad=True)
    assert [p.name for p in paths] == ["c.png"]


def test_a_truncated_image_is_found_up_front_with_verify_or_when_read(tmp_path):
    root = _tree(tmp_path)
    full = (root / "cat" / "a.png").read_bytes()
    (root / "cat" / "a.png").write_bytes(full[: len(full) // 2])  # header intact, pixel data cut
    ds = ImageFolderData(root)  # the header check alone passes
    with pytest.raises(DataError, match="a.png"):
        ds[0]
    with pytest.raises(DataError, match="a.png"):
        ImageFolderData(root, verify=True)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert len(ImageFolderData(root, verify=True, skip_bad=True)) == 3


def test_images_of_different_sizes_need_a_size(tmp_path):
    root = _tree(tmp_path)
    Image.fromarray(np.zeros((5, 5, 3), dtype=np.uint8)).save(root / "dog" / "small.png")
    with pytest.raises(DataError, match=r"is 6x8 \(HxW\) but .*small.png is 5x5"):
        ImageFolderData(root)
    assert ImageFolderData(root, size=(6, 8))[4].image.shape == (3, 6, 8)
    with pytest.raises(DataError, match=r"6x8 .* 5x5"):
        load_images(root / "dog")
    with pytest.raises(DataError, match="no such file"):
        load_images(tmp_path / "missing")
    (tmp_path / "void").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_images(tmp_path / "void")
    with pytest.raises(InputError, match="no image paths"):
        load_images([])


def test_32_bit_float_tiffs_are_read_as_intensities_or_refused(tmp_path):
    ramp = np.linspace(0.0, 1.0, 12, dtype=np.float32).reshape(3, 4)
    Image.fromarray(ramp, mode="F").save(tmp_path / "ramp.tif")
    image = read_image(tmp_path / "ramp.tif")
    assert image.shape == (3, 3, 4)
    expected = np.floor(ramp * 255 + 0.5) / 255  # 8-bit, rounded, as every other image is read
    assert np.allclose(image[0].numpy(), expected) and torch.equal(image[0], image[2])  # grey → RGB
    assert image.max() == 1.0  # not the all-black PIL's own conversion gave
    Image.fromarray(ramp * 1000, mode="F").save(tmp_path / "wide.tif")
    with pytest.raises(DataError, match=r"wide.tif: 32-bit float image with values 0..1000.*\[0, 1\]"):
        read_image(tmp_path / "wide.tif")
    nan = ramp.copy()
    nan[0, 0] = np.nan
    Image.fromarray(nan, mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(DataError, match="NaN/inf"):
        read_image(tmp_path / "nan.tif")
