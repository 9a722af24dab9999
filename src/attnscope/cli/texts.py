"""`attnscope explain --text "a red three" --text "a seven"` (or `--texts FILE`): maps of a dual encoder per image
and prompt, and each prompt token's relevance drawn as highlighted text (`tokens.html`, `tokens.json`).

    @text_options()   --text, --texts, --token-methods  →  prompts: Prompts   (the group, as in `cli/common.py`)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnscope.cli.common import Spec, group
from attnscope.cli.options import parse_list
from attnscope.errors import InputError

if TYPE_CHECKING:
    import torch

MAX_TEXTS = 64  # prompts per call: each is one more target row of every image


@dataclass(frozen=True)
class Prompts:
    """The prompts of `--text` and `--texts FILE` (read and checked before any work) and `--token-methods`."""

    texts: tuple[str, ...] = ()
    token_methods: tuple[str, ...] = ("inputxgrad",)

    def target(self, info: dict[str, Any], alone: bool) -> Any:
        """A `Text` target of the prompts with the model's tokenizer (from `info`), None if none were given.
        `alone`: whether no other target (--targets) and no --stream were asked for."""
        if not self.texts:
            return None
        if not alone:
            raise InputError("--text / --texts explain prompts: they go without --targets and --stream")
        from attnscope.explain.text import Text

        return Text(list(self.texts), tokenizer=info.get("tokenizer"))


def _read_prompts(texts: tuple[str, ...], texts_file: str | None) -> tuple[str, ...]:
    """--text prompts, then --texts FILE's non-empty lines."""
    prompts = list(texts)
    if texts_file is not None:
        path = Path(texts_file)
        if not path.is_file():
            raise InputError(f"--texts {texts_file}: no such file")
        try:
            prompts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"--texts {texts_file}: cannot read it as UTF-8 text ({e})") from None
    if prompts and (len(prompts) > MAX_TEXTS or any(not p.strip() for p in prompts)):
        raise InputError(f"give 1 to {MAX_TEXTS} non-empty prompts with --text / --texts, got {len(prompts)}")
    return tuple(prompts)


def text_options() -> Callable[[Callable], Callable]:
    """--text (repeatable), --texts FILE, --token-methods → `prompts`."""
    specs: list[Spec] = [
        (("--text", "texts"), dict(multiple=True, metavar="PROMPT", help="A dual encoder (CLIP, SigLIP): explain "
                                   "the image–text score of this prompt (repeatable).")),
        (("--texts", "texts_file"), dict(default=None, metavar="FILE", help="Prompts, one per line (as --text).")),
        (("--token-methods",), dict(default="inputxgrad", show_default=True, help="With --text: methods of each "
                                    "prompt token's relevance (tokens.html): inputxgrad, ig, attention, chefer-mm, "
                                    "attnlrp.")),
    ]

    def build(texts: tuple[str, ...], texts_file: str | None, token_methods: str) -> Prompts:
        return Prompts(_read_prompts(texts, texts_file), tuple(parse_list(token_methods, "--token-methods")))

    return group("prompts", specs, build)


def split_by_text(maps: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    """(B, K, H, W) maps → one (B, H, W) map per prompt, keys `METHOD/tK` (as `sat/tNN`), the prompt in `meta`."""
    out = {}
    for name, amap in maps.items():
        for k, text in enumerate(texts):
            column = amap[:, k]
            column.meta["text"] = text
            out[f"{name}/t{k}"] = column
    return out


def write_tokens(folder: Path, model: Any, images: torch.Tensor, text: Any, token_methods: tuple[str, ...],
                 sources: list[dict[str, Any]]) -> dict[str, Any]:
    """tokens.json (per method, image and prompt: each token's relevance) and tokens.html (highlighted text);
    returns what the manifest records of them."""
    from attnscope import fileio
    from attnscope.explain.text_tokens import explain_tokens
    from attnscope.modules import device_of
    from attnscope.report.tokens import token_page

    names = [s["name"] for s in sources]
    found = explain_tokens(model, images.to(device_of(model)), text, list(token_methods))
    data = {m: [[tm.words(b, k) for k in range(len(text.texts))] for b in range(len(images))]
            for m, tm in found.items()}
    fileio.write_json(folder / "tokens.json", {"texts": list(text.texts), "images": names, "methods": data})
    fileio.write_text(folder / "tokens.html", token_page(data, list(text.texts), names))
    return {"texts": list(text.texts), "tokens": {"json": "tokens.json", "html": "tokens.html"}}
