"""mkdocs hook: the site's home page is README.md, so the front page has one source.

README.md lives at the repository root (where GitHub shows it) and links into docs/; the site
is built from docs/, so the hook adds the README as index.md with those links made relative,
and points the pages' links to ../README.md at it.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

README = Path(__file__).resolve().parents[1] / "README.md"


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, "index.md", content=README.read_text(encoding="utf-8")))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri == "index.md":
        return markdown.replace("](docs/", "](")
    return markdown.replace("](../README.md", "](index.md")
