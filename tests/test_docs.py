"""Docs that cannot drift: the commands they show parse, their links resolve, the config reference is current.

Reads README.md and docs/*.md as text and checks them against the real CLI parser, the shipped
presets, the files on disk and the config schema. Fast: nothing is run or loaded.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from fedhello.cli import build_parser
from fedhello.config import COMPARISON_PRESET_PACKAGE, PRESET_PACKAGE, config_reference, preset_names

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
CONFIG_REFERENCE = DOCS / "config-reference.md"

FENCE = re.compile(r"^```.*?$(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`(fedhello [^`]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
PRESET_KINDS = {"compare": COMPARISON_PRESET_PACKAGE}  # other commands take experiment presets


def _commands_in_blocks(text: str) -> list[str]:
    """Every `fedhello ...` command line of the fenced blocks, continuation lines joined."""
    commands = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ").removeprefix(".venv/bin/")
            if line.startswith("fedhello "):
                commands.append(line)
    return commands


def _shown_commands() -> list[tuple[str, str, bool]]:
    """(page, command, whole): whole commands come from code blocks, bare mentions from inline code."""
    shown = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        shown += [(page.name, command, True) for command in _commands_in_blocks(text)]
        shown += [(page.name, command, False) for command in INLINE_CODE.findall(FENCE.sub("", text))]
    return shown


SHOWN = _shown_commands()


def test_the_docs_show_commands():
    assert sum(whole for _, _, whole in SHOWN) >= 30  # the extraction found the code blocks


@pytest.mark.parametrize(("page", "command", "whole"), SHOWN, ids=[f"{p}: {c}" for p, c, _ in SHOWN])
def test_every_command_shown_parses_with_the_cli(page, command, whole):
    words = shlex.split(command, comments=True)[1:]
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices  # the registered subcommands
    assert words[0] in subcommands, f"{page}: `fedhello {words[0]}` is not a command"
    if any(word.startswith("[-") for word in words):
        return  # a usage synopsis such as `fedhello run [--preset NAME]`: its command name is checked
    if not whole and not any(word.startswith("-") for word in words):
        return  # a mention such as `fedhello report`, not a command to run
    try:
        args = parser.parse_args(words)
    except SystemExit as exit_:
        pytest.fail(f"{page}: `{command}` does not parse (exit {exit_.code})")
    preset = getattr(args, "preset", None)
    if preset is not None:
        package = PRESET_KINDS.get(words[0], PRESET_PACKAGE)
        assert preset in preset_names(package), f"{page}: `{command}` names no shipped preset {preset!r}"


def _relative_links() -> list[tuple[Path, str]]:
    links = []
    for page in PAGES:
        for target in LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
            if not re.match(r"^[a-z]+:", target) and not target.startswith("#"):
                links.append((page, target))
    return links


LINKS = _relative_links()


@pytest.mark.parametrize(("page", "target"), LINKS, ids=[f"{p.name}: {t}" for p, t in LINKS])
def test_every_relative_link_and_image_resolves(page, target):
    path = target.split("#", 1)[0]
    assert (page.parent / path).exists(), f"{page.name} links to {target}, which does not exist"


def test_every_docs_page_is_in_the_site_and_reachable_from_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in DOCS.glob("*.md"):
        assert f"(docs/{page.name})" in readme, f"README.md's map of the docs misses {page.name}"
        assert page.name in nav, f"mkdocs.yml's nav misses {page.name}"


def test_config_reference_page_is_what_fedhello_config_generates():
    """Regenerate with `scripts/config-reference` after changing the schema."""
    page = CONFIG_REFERENCE.read_text(encoding="utf-8")
    table = config_reference()
    assert page.endswith("\n" + table + "\n"), "docs/config-reference.md is stale: run scripts/config-reference"
    assert "| field |" not in page[: -len(table)]  # the generated table is the only one
