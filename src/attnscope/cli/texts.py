"""`attnscope explain --text "a red three" --text "a seven"` (or `--texts FILE`): maps of a dual encoder per image
and prompt, and each prompt token's relevance drawn as highlighted text (`tokens.html`, `tokens.json`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnscope.errors import InputError

if TYPE_CHECKING:
    import torch

MAX_TEXTS = 64  # prompts per call: each is one more target row of every image


def text_target(texts: tuple[str, ...], texts_file: str | None, info: dict[str, Any], alone: bool):
    """A `Text` target from --text and --texts FILE (one prompt per line), with the model's tokenizer; None if none.
    `alone`: whether no other target (--targets) and no --stream were asked for."""
    prompts = list(texts)
    if texts_file is not None:
        path = Path(texts_file)
        if not path.is_file():
            raise InputError(f"--texts {texts_file}: no such file")
        try:
            prompts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"--texts {texts_file}: cannot read it as UTF-8 text ({e})") from None
    if not prompts:
        return None
    if not alone:
        raise InputError("--text / --texts explain prompts: they go without --targets and --stream")
    if len(prompts) > MAX_TEXTS or any(not p.strip() for p in prompts):
        raise InputError(f"give 1 to {MAX_TEXTS} non-empty prompts with --text / --texts, got {len(prompts)}")
    from attnscope.explain.text import Text

    return Text(prompts, tokenizer=info.get("tokenizer"))


def split_by_text(maps: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    """(B, K, H, W) maps → one (B, H, W) map per prompt, keys `METHOD/tK` (as `sat/tNN`), the prompt in `meta`."""
    out = {}
    for name, amap in maps.items():
        for k, text in enumerate(texts):
            column = amap[:, k]
            column.meta["text"] = text
            out[f"{name}/t{k}"] = column
    return out


def write_tokens(folder: Path, model: Any, images: torch.Tensor, text: Any, token_methods: str,
                 sources: list[dict[str, Any]]) -> dict[str, Any]:
    """tokens.json (per method, image and prompt: each token's relevance) and tokens.html (highlighted text);
    returns what the manifest records of them."""
    from attnscope import fileio
    from attnscope.cli.options import parse_list
    from attnscope.explain.text_tokens import explain_tokens
    from attnscope.modules import device_of
    from attnscope.report.tokens import token_page

    names = [s["name"] for s in sources]
    found = explain_tokens(model, images.to(device_of(model)), text, parse_list(token_methods, "--token-methods"))
    data = {m: [[tm.words(b, k) for k in range(len(text.texts))] for b in range(len(images))]
            for m, tm in found.items()}
    fileio.write_json(folder / "tokens.json", {"texts": list(text.texts), "images": names, "methods": data})
    fileio.write_text(folder / "tokens.html", token_page(data, list(text.texts), names))
    return {"texts": list(text.texts), "tokens": {"json": "tokens.json", "html": "tokens.html"}}
