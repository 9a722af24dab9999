"""Prompt tokens drawn as highlighted text: each token's background is its relevance (red positive, blue
negative, scaled per prompt by its largest |value|), every string escaped. Used by `attnscope explain --text`."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

SCALE = ("red positive, blue negative, each prompt scaled by its largest |value|, in tenths (hover a token for its "
         "value)")  # how the shades read: the report's section and tokens.html say it alike
LEVELS = 10  # the background's opacity in steps of 1/LEVELS: classes, so the report's style-src hash holds
TOKEN_CSS = "".join(f".tok-{sign}{k} {{ background: rgba({rgb},{k / LEVELS:.1f}); padding: 1px 3px; }}\n"
                    for sign, rgb in (("p", "220,40,40"), ("n", "40,80,220")) for k in range(LEVELS + 1))


def highlighted(words: Sequence[tuple[str, float]]) -> str:
    """One prompt as HTML spans: (token, relevance) pairs, the background's opacity |r| / max|r| rounded to
    tenths (a class of TOKEN_CSS: no inline style, which the report's Content-Security-Policy refuses)."""
    top = max((abs(v) for _, v in words), default=0.0) or 1.0
    spans = []
    for word, value in words:
        level = round(LEVELS * abs(value) / top)
        spans.append(f'<span title="{value:.4g}" class="tok-{"p" if value >= 0 else "n"}{level}">'
                     f"{html.escape(word)}</span>")
    return " ".join(spans)


def token_page_body(data: Mapping[str, Sequence[Sequence[Sequence[tuple[str, float]]]]], images: Sequence[str]
                    ) -> str:
    """Per method, per image, every prompt's tokens highlighted by their relevance (HTML, escaped)."""
    rows = []
    for method, per_image in data.items():
        rows.append(f"<h4>{html.escape(method)}</h4>")
        for name, prompts in zip(images, per_image, strict=False):
            items = "".join(f"<li>{highlighted(words)}</li>" for words in prompts)
            rows.append(f"<p>{html.escape(str(name))}</p><ul>{items}</ul>")
    return "".join(rows)


def token_page(data: Mapping[str, Sequence[Sequence[Sequence[tuple[str, float]]]]], texts: Sequence[str],
               images: Sequence[str]) -> str:
    """A self-contained page: per method, per image, every prompt's tokens highlighted by their relevance."""
    rows = [token_page_body(data, images)]
    head = ("<!doctype html><meta charset='utf-8'><meta http-equiv='Content-Security-Policy' "
            "content=\"default-src 'none'; style-src 'unsafe-inline'\"><title>prompt tokens</title>"
            f"<style>{TOKEN_CSS}</style>")
    legend = f"<p>Relevance of each token of {len(texts)} prompt(s) for the image–text score: {SCALE}.</p>"
    return head + "<body style='font-family: sans-serif'>" + legend + "".join(rows) + "</body>"
