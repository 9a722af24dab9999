"""Wrapped methods (`smoothgrad:`, `smoothgrad2:`, `vargrad:`, `augsmooth:`, `fuse:`): what they combine,
that methods wrapped alike share each variant's pass, and the invariants of every method."""

import pytest
import torch
from torch import nn

import attnscope as ats
from attnscope.errors import InputError, UnknownNameError


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return ats.models.get("smallcnn", widths=[8, 16, 16]).eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))


T = torch.tensor([1, 3, 5])


def forwards(model: nn.Module, *args, **kw) -> tuple[dict, int]:
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        out = ats.explain(model, *args, **kw)
    finally:
        handle.remove()
    return out, len(calls)


def test_smoothgrad_of_signed_saliency_is_the_smoothgrad_method(model, x) -> None:
    """Both draw the same n noise images from the seed; averaging commutes with the signed channel sum."""
    opts = {"n": 4, "sigma": 0.2, "reduce": "sum"}
    out = ats.explain(model, x, ["smoothgrad:saliency", "smoothgrad"], targets=T,
                      options={"smoothgrad:saliency": opts, "smoothgrad": opts})
    torch.testing.assert_close(out["smoothgrad:saliency"].values, out["smoothgrad"].values, rtol=1e-5, atol=1e-9)


def test_methods_wrapped_alike_share_each_noisy_pass(model, x) -> None:
    opts = {"n": 3}
    forwards(model, x, ["gradcam"], targets=T)  # the "auto" layer is found (by a traced forward) once per model
    _, alone = forwards(model, x, ["smoothgrad:gradcam"], targets=T, options={"smoothgrad:gradcam": opts})
    _, same = forwards(model, x, ["smoothgrad:saliency", "smoothgrad:gradcam"], targets=T,
                       options={"smoothgrad:saliency": opts, "smoothgrad:gradcam": opts})
    assert same == alone  # saliency rides on gradcam's noisy passes
    _, other = forwards(model, x, ["smoothgrad:saliency", "smoothgrad:gradcam", "vargrad:gradcam"], targets=T,
                        options={"smoothgrad:saliency": opts, "smoothgrad:gradcam": opts, "vargrad:gradcam": opts})
    assert other == alone + 3  # another wrapper: its own 3 noisy passes


def test_without_noise_the_three_noise_wrappers_are_mean_square_and_zero(model, x) -> None:
    opts = {"n": 3, "sigma": 0.0}
    out = ats.explain(model, x, ["inputxgrad", "smoothgrad:inputxgrad", "smoothgrad2:inputxgrad", "vargrad:inputxgrad"],
                      targets=T, options={f"{w}:inputxgrad": opts for w in ("smoothgrad", "smoothgrad2", "vargrad")})
    plain = out["inputxgrad"].values
    torch.testing.assert_close(out["smoothgrad:inputxgrad"].values, plain)
    torch.testing.assert_close(out["smoothgrad2:inputxgrad"].values, plain.square())
    assert float(out["vargrad:inputxgrad"].values.abs().max()) == 0.0


def test_vargrad_is_the_variance_of_the_noisy_maps(model, x) -> None:
    out = ats.explain(model, x[:1], ["smoothgrad:saliency", "smoothgrad2:saliency", "vargrad:saliency"],
                      targets=T[:1], options={w: {"n": 5} for w in ("smoothgrad:saliency", "smoothgrad2:saliency",
                                                                    "vargrad:saliency")})
    mean, square = out["smoothgrad:saliency"].values, out["smoothgrad2:saliency"].values
    torch.testing.assert_close(out["vargrad:saliency"].values, square - mean.square(), rtol=1e-4, atol=1e-12)


def test_augsmooth_flips_the_map_back(model, x) -> None:
    out = ats.explain(model, x, "augsmooth:gradcam", targets=T,
                      options={"augsmooth:gradcam": {"flips": ["horizontal"], "factors": [1.0]}})
    mirrored = ats.explain(model, x.flip(-1), "gradcam", targets=T)["gradcam"].values.flip(-1)
    torch.testing.assert_close(out["augsmooth:gradcam"].values, mirrored)
    both = ats.explain(model, x, ["augsmooth:gradcam", "gradcam"], targets=T,
                       options={"augsmooth:gradcam": {"factors": [1.0]}})
    torch.testing.assert_close(both["augsmooth:gradcam"].values, (both["gradcam"].values + mirrored) / 2)


def test_fuse_is_layercams_scaled_maximum_over_layers(model, x) -> None:
    layers = ["features.1", "features.2"]
    out = ats.explain(model, x, "fuse:layercam", targets=T, options={"fuse:layercam": {"layers": layers}})
    maps = torch.stack([ats.explain(model, x, "layercam", targets=T, layer=name)["layercam"].values
                        for name in layers])
    peak = maps.flatten(-2).amax(-1)[..., None, None]
    torch.testing.assert_close(out["fuse:layercam"].values, torch.tanh(2 * maps / peak).amax(dim=0))


def test_wrapped_methods_leave_the_model_as_found_and_batch_like_one_by_one(model, x) -> None:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    opts = {"smoothgrad:gradcam": {"n": 2}}
    batched = ats.explain(model, x, "smoothgrad:gradcam", targets=T, options=opts)["smoothgrad:gradcam"].values
    for i in range(len(x)):
        single = ats.explain(model, x[i : i + 1], "smoothgrad:gradcam", targets=T[i : i + 1], options=opts)
        torch.testing.assert_close(single["smoothgrad:gradcam"].values[0], batched[i], rtol=1e-4, atol=1e-7)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_bad_wrapped_names_and_options_are_refused(model, x) -> None:
    with pytest.raises(UnknownNameError):
        ats.explain(model, x, "blur:gradcam")
    with pytest.raises(InputError, match="runs the model again"):
        ats.explain(model, x, "smoothgrad:ig")
    with pytest.raises(InputError, match="no option"):
        ats.explain(model, x, "smoothgrad:gradcam", options={"smoothgrad:gradcam": {"steps": 3}})
    with pytest.raises(InputError, match="n must be"):
        ats.explain(model, x, "vargrad:gradcam", options={"vargrad:gradcam": {"n": 0}})


def test_cli_explains_wrapped_and_new_methods(tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from attnscope.cli import cli

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["explain", "--checkpoint", "smallcnn", "--images", "clutter", "--n", "2",
                                      "--methods", "fullgrad,smoothgrad:gradcam", "--option",
                                      "smoothgrad:gradcam.n=2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["methods"]["smoothgrad:gradcam"]["kind"] == "cam"
    assert manifest["methods"]["smoothgrad:gradcam"]["options"]["n"] == 2
    from attnscope.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["explain", "--checkpoint", "smallcnn", "--images", "clutter", "--n", "2", "--methods", "smoothgrad:ig",
              "--out", str(tmp_path / "bad")])
    assert stop.value.code == 2 and not (tmp_path / "bad").exists()
