"""Prompt tokens drawn as highlighted text: each token's background is its relevance (red positive, blue
negative, scaled per prompt by its largest |value|), every string escaped. Used by `attnscope explain --text`."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence


def highlighted(words: Sequence[tuple[str, float]]) -> str:
    """One prompt as HTML spans: (token, relevance) pairs, the background's opacity |r| / max|r|."""
    top = max((abs(v) for _, v in words), default=0.0) or 1.0
    spans = []
    for word, value in words:
        colour = "220,40,40" if value >= 0 else "40,80,220"
        alpha = abs(value) / top
        spans.append(f'<span title="{value:.4g}" style="background: rgba({colour},{alpha:.3f}); padding: 1px 3px">'
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
            "content=\"default-src 'none'; style-src 'unsafe-inline'\"><title>prompt tokens</title>")
    legend = (f"<p>Relevance of each token of {len(texts)} prompt(s) for the image–text score: red positive, "
              "blue negative, per prompt scaled by its largest |value| (hover for the value).</p>")
    return head + "<body style='font-family: sans-serif'>" + legend + "".join(rows) + "</body>"
