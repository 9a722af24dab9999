"""`attnscope caption`: captions of images by a captioner (Show, Attend and Tell, captioner-tiny, a Hugging Face
captioner or VLM), with a strip of per-word maps per image and method (as in the paper's figures), and BLEU /
grounding when the images come from a captioning data set with references.

Everything is written into a temporary folder that is renamed to `--out` at the end, so a failed
run never leaves a half-written output; an earlier caption output is replaced only with `--overwrite`
(`attnscope.outdir`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from attnscope import console, fileio
from attnscope.cli import cli
from attnscope.cli.common import Compute, ModelSource, Output, compute_options, model_options, output_options
from attnscope.cli.options import parse_settings
from attnscope.errors import InputError

if TYPE_CHECKING:
    import torch


@cli.command("caption")
@model_options(help="Run folder or checkpoint of a trained sat or captioner-tiny, or hf:CLASS (a Hugging Face "
                   "captioner or VLM) with --weights FOLDER (its save_pretrained folder).")
@click.option("--methods", default="auto", show_default=True,
              help="Per-word maps: auto (the model's own attention, sat, for sat and captioner-tiny; gradcam for "
                   "others) or names, e.g. alpha,cross-attention,chefer-mm,gradcam (greedy captions).")
@click.option("--images", required=True,
              help="An image file or folder, or a captioning data set name (scenes, karpathy).")
@output_options("caption", help="Folder to write captions.json and attention/*.png into.")
@click.option("--n", "n", default=16, show_default=True, type=int, help="Images to caption from a data set.")
@click.option("--split", default="test", show_default=True, help="Split of a data set.")
@click.option("--data-opt", multiple=True, metavar="KEY=VALUE", help="Data set option (default: the training run's).")
@click.option("--beam-size", default=1, show_default=True, type=int, help="1: greedy; more: beam search.")
@click.option("--max-len", default=None, type=int, help="Longest caption (default: the model's).")
@click.option("--size", default=None, type=int, help="Resize images from a folder to size × size.")
@click.option("--explain-batch", default=32, show_default=True, type=int,
              help="Images captioned (with their attention) per call.")
@click.option("--batch-size", "old_batch", default=None, type=int, hidden=True)
@compute_options()
def caption_command(source: ModelSource, methods: str, images: str, output: Output, n: int, split: str,
                    data_opt: tuple[str, ...], beam_size: int, max_len: int | None, size: int | None,
                    explain_batch: int, old_batch: int | None, compute: Compute) -> None:
    """Caption IMAGES with the model in CHECKPOINT; write captions.json and per-word attention strips."""
    from attnscope.cli.options import parse_list
    from attnscope.explain.multimodal import captioner

    batch_size = explain_batch if old_batch is None else old_batch
    if n < 1 or batch_size < 1 or beam_size < 1:
        raise InputError("--n, --explain-batch and --beam-size must be >= 1")
    output.check()
    model, header = source.load()
    own = getattr(model, "attention_kind", None) == "sat"
    if not own and captioner(model, header.get("tokenizer")) is None:
        raise InputError(f"{source.source} holds a {header['model']['name']!r} model, not a captioning model "
                         "attnscope knows")
    names = (["sat"] if own else ["gradcam"]) if methods == "auto" else parse_list(methods, "--methods")
    if names != ["sat"] and beam_size > 1:
        raise InputError("--beam-size goes with the model's own attention (--methods sat); other maps explain "
                         "the greedy caption")
    if own:
        _check_decoding(model, beam_size, max_len)
    model.to(compute.torch_device())
    data = _source(images, header, n, split, parse_settings(data_opt, "--data-opt"), size)
    with output.building() as partial:
        how = {"methods": names, "tokenizer": header.get("tokenizer")}
        summary = write_captions(model, data, partial, beam_size, max_len, batch_size, compute.quiet, how)
        summary["checkpoint"] = source.source
        fileio.write_json(partial / "captions.json", summary)
    for key, value in summary.get("metrics", {}).items():
        click.echo(f"{key}: {value:.4f}")
    click.echo(f"wrote {output.path}/ (captions.json, attention/*.png for {len(summary['images'])} images)")


MAX_LEN = 200  # words per caption: each keeps one attention map per image


def _check_decoding(model: torch.nn.Module, beam_size: int, max_len: int | None) -> None:
    """Bound beam search by what it can use: no more beams than the model has words (100000 asked for 118 GB)."""
    words = len(model.vocab)
    if beam_size > words:
        raise InputError(f"--beam-size {beam_size} is more than the model's {words} words, which is the most "
                         f"beams a caption can branch into; give at most {words}")
    if max_len is not None and not 1 <= max_len <= MAX_LEN:
        raise InputError(f"--max-len must be in 1..{MAX_LEN} words, got {max_len}")


def _source(images: str, header: dict[str, Any], n: int, split: str, data_cfg: dict[str, Any],
            size: int | None) -> dict[str, Any]:
    """The images to caption: from a path (no references) or from a captioning data set (with them)."""
    import torch

    from attnscope import data
    from attnscope.data.inputs import existing_input

    path = existing_input(images, "--images")
    if path is not None:
        batch, paths = data.load_images(path, size=size)  # (N, 3, H, W)
        return {"images": batch, "names": [p.name for p in paths], "samples": None}
    if images not in data.names():
        raise InputError(f"--images {images!r} is neither an existing file or folder nor a data set "
                         f"({', '.join(data.names())})")
    info = header.get("info", {})
    cfg = {**(info.get("data_cfg", {}) if info.get("data") == images else {}), **data_cfg}
    dataset = data.get(images, split, n, 0, **cfg)
    if getattr(dataset, "kind", None) != "captioning":
        raise InputError(f"data set {images!r} has no captions; pass a captioning data set or an image folder")
    samples = [dataset[i] for i in range(min(n, len(dataset)))]
    names = [getattr(s, "filename", None) or f"{images}-{split}-{i:05d}" for i, s in enumerate(samples)]
    return {"images": torch.stack([s.image for s in samples]), "names": names, "samples": samples,
            "vocabulary": dataset.vocabulary()}


def write_captions(model: torch.nn.Module, source: dict[str, Any], out: Path, beam_size: int, max_len: int | None,
                   batch_size: int, quiet: bool, how: dict[str, Any] | None = None) -> dict[str, Any]:
    """Caption every image of `source`; write one attention strip per image (and method); return the summary."""
    from attnscope.modules import device_of
    from attnscope.train.caption_eval import CaptionScores

    how = how or {"methods": ["sat"], "tokenizer": None}
    images, names, samples = source["images"], source["names"], source["samples"]
    vocab = source.get("vocabulary")
    if vocab is not None and vocab != getattr(model, "vocab", vocab):
        warnings.warn("the data set's vocabulary differs from the model's: reference words the model never "
                      "learnt count as misses in BLEU", stacklevel=2)
    scores, records = CaptionScores(), []
    stems = _unique_stems(names)
    with console.progress(len(images), "caption", not quiet) as bar:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size].to(device_of(model))
            part = None if samples is None else samples[start : start + len(chunk)]
            seqs = _per_word(model, chunk, part, scores, beam_size, max_len, how)
            first = next(iter(seqs.values()))
            for i, w in enumerate(first.words):
                k = start + i
                strips = {}
                for method, seq in seqs.items():
                    strip = Path("attention") / (f"{stems[k]}.png" if len(seqs) == 1 else f"{stems[k]}-{method}.png")
                    _write_strip(out / strip, chunk[i].cpu(), w, seq.values[i].cpu())
                    strips[method] = str(strip)
                record = {"image": names[k], "caption": " ".join(w), "words": w, "strip": next(iter(strips.values())),
                          "strips": strips}
                if samples is not None:
                    record["references"] = list(samples[k].captions)
                records.append(record)
            bar.advance(len(chunk))
    summary: dict[str, Any] = {"beam_size": beam_size, "images": records}
    if samples is not None:
        summary["metrics"] = scores.result()
    return summary


def _per_word(model: torch.nn.Module, chunk: torch.Tensor, part: list | None, scores: Any, beam_size: int,
              max_len: int | None, how: dict[str, Any]) -> dict[str, Any]:
    """The SequenceMap of each method for the captions of `chunk`: `sat` (the model's own, greedy or beam), or
    any method on the greedy caption (`Caption` targets); scored against the references when there are some."""
    from attnscope.explain import explain
    from attnscope.explain.multimodal import Caption
    from attnscope.train.caption_eval import add_generated

    if how["methods"] == ["sat"]:
        return {"sat": add_generated(scores, model, chunk, part, beam_size, max_len)}
    out = explain(model, chunk, how["methods"], targets=Caption(tokenizer=how["tokenizer"], max_len=max_len))
    first = out[how["methods"][0]]
    if part is not None:
        scores.add(first.words, (first.lowres if first.lowres is not None else first.values).cpu(), part)
    return {m: out[m] for m in how["methods"]}


def _write_strip(path: Path, image: torch.Tensor, words: list[str], values: torch.Tensor) -> None:
    """The image, then the attention of each word over it, the word above (as in the paper's figures)."""
    from attnscope.report import figures

    maps = {f"{t + 1} {w}": values[t][None] for t, w in enumerate(words)}
    figures.save_png(path, figures.grid(image[None], maps))


def _unique_stems(names: list[str]) -> list[str]:
    """File-name stems for the strips, one per image, made unique by their index where needed."""
    stems = [Path(n).stem.replace("/", "_") or "image" for n in names]
    seen: dict[str, int] = {}
    for s in stems:
        seen[s] = seen.get(s, 0) + 1
    return [f"{i:05d}-{s}" if seen[s] > 1 else s for i, s in enumerate(stems)]
