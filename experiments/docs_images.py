"""The README's pictures of a demo run: its grids (PNG) and screenshots of its report in headless chromium.

    PYTHONPATH=src python experiments/docs_images.py runs/demo --out docs/img

Copies `photos/grid.png` and `photos/top5.png` (EfficientNet-Lite0 on the photos) and `grid.png` (the
trained SmallCNN) of the demo folder (scaled down to `WIDTH`), and screenshots the report's real-photo
section, with Debian's chromium (`ATTNSCOPE_CHROMIUM` or `chromium` on PATH) driven
by Playwright, as the browser test drives it. Writes only the files it names below into `--out`.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
COPIES = {"photos/grid.png": "photos_grid.png", "photos/top5.png": "photos_top5.png", "grid.png": "demo_grid.png"}
WIDTH = 1100  # px: wider grids are scaled down to this, so the repository stays small


def screenshots(report: Path, out: Path) -> list[Path]:
    """The report's real-photo section, as a PNG in `out`."""
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("ATTNSCOPE_CHROMIUM") or shutil.which("chromium") or ""
    if not Path(chromium).is_file():
        raise SystemExit("no chromium: apt-get install chromium, or set ATTNSCOPE_CHROMIUM")
    written = [out / "report_photos.png"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(report.resolve().as_uri())
        heading = page.locator("h2", has_text="A pretrained model on real photos")
        box = heading.bounding_box()
        page.screenshot(path=str(written[0]), full_page=True,
                        clip={"x": 0, "y": box["y"] - 8, "width": 1200, "height": 1100})
        browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path, help="a folder written by `attnscope demo`")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    for source, name in COPIES.items():
        image = Image.open(args.demo / source)
        if image.width > WIDTH:
            image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
        image.save(args.out / name, optimize=True)
        print(f"wrote {args.out / name}")
    for path in screenshots(args.demo / "report.html", args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
