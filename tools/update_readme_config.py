"""Regenerate the README's configuration table from the config fields (``make docs``)."""

from __future__ import annotations

import re
from pathlib import Path

from sentirefine.config import reference_markdown

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def main() -> None:
    text = README.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    README.write_text(pattern.sub(lambda _: f"{START}\n{reference_markdown()}\n{END}", text), encoding="utf-8")


if __name__ == "__main__":
    main()
