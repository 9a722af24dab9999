"""The report shows what files say as text: markup in every field becomes no element and no handler; a CSP
allows only the page's own script and style; bad values are one clear error or a gap, never a crash."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from attnscope import fileio
from attnscope.errors import DataError
from attnscope.report import build
from attnscope.report.html import csp
from tiny_runs import HOSTILE, hostile_run


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return hostile_run(tmp_path_factory.mktemp("hostile") / "run")


def test_markup_in_every_field_becomes_text_not_elements(hostile):
    page = build(hostile).read_text()
    parser = _Tags()
    parser.feed(page)
    assert [t for t, a in parser.tags if any(k.startswith("on") for k in a)] == []  # no handler anywhere
    assert [t for t, _ in parser.tags].count("script") == 2  # the data block and the page's own script
    assert [t for t, _ in parser.tags].count("svg") == page.count('<svg class="chart"')  # only our charts
    assert all(a.get("src", "").startswith("data:image/png;base64,") for t, a in parser.tags if t == "img")
    shown = page.count("&lt;img src=x onerror=alert(1)&gt;")
    # config (table and JSON), header (model, data, guidance), metrics key, map key and regions, sanity
    # (heading, blocks, method, metric), leaderboard, summary, captions (image, caption, two references)
    assert shown >= 20, shown
    data = json.loads(re.search(r'id="frames-data">(.*?)</script>', page, re.S)[1])
    assert data["keys"] == [HOSTILE, "saliency"] and data["classes"][0] == HOSTILE + "0"  # intact, as text
    assert data["frames"][1]["flags"] == {"saliency": {"1": "all zero"}}
    assert "Captions" in page and "Sanity checks" in page and "Leaderboard" in page


def test_the_csp_allows_only_the_page_own_script_style_and_data_images(hostile):
    page = build(hostile).read_text()
    policy = csp()
    assert f'<meta http-equiv="Content-Security-Policy" content="{policy}">' in page[:400]
    assert "default-src 'none'" in policy and "img-src data:" in policy and "unsafe" not in policy
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]{44}'", policy)


def test_a_nan_learning_rate_is_a_gap_and_a_bad_epoch_one_line(tmp_path):
    run = tmp_path / "run"
    rows = [{"epoch": e, "lr": float("nan") if e == 2 else 0.1, "train_loss": 1.0 / e} for e in (1, 2, 3)]
    fileio.write_text(run / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    page = build(run).read_text()
    lr = re.search(r'aria-label="lr".*?</svg>', page, re.S)[0]
    assert lr.count("<polyline") == 2  # epoch 1 and epoch 3, with a gap at the NaN
    fileio.write_text(run / "metrics.jsonl", json.dumps({"epoch": HOSTILE, "lr": 0.1}) + "\n")
    with pytest.raises(DataError, match=r"metrics.jsonl line 1: epoch must be a finite number"):
        build(run)
    fileio.write_text(run / "metrics.jsonl", "[1, 2]\n")
    with pytest.raises(DataError, match="line 1: expected an object"):
        build(run)
    fileio.write_text(run / "metrics.jsonl", "")
    fileio.write_json(run / "config.json", [HOSTILE])
    with pytest.raises(DataError, match="config.json: expected a JSON object"):
        build(run)


def test_a_caption_strip_outside_its_folder_is_refused(tmp_path):
    run = tmp_path / "run"
    fileio.write_json(run / "captions.json", {"images": [{"image": "a", "caption": "a dog", "strip": "../../x.png"}]})
    with pytest.raises(DataError, match="points outside"):
        build(run)
