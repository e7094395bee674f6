from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
FRAGMENT = "<!-- fragment -->"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*$")
LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
BLOCK_TIMEOUT = 120


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    end: int
    lang: str
    code: str
    fragment: bool

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    found: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        before = [line.strip() for line in lines[:index] if line.strip()]
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            raise AssertionError(f"{page.relative_to(ROOT)}:{index + 1}: unclosed code block")
        code = textwrap.dedent("\n".join(lines[index + 1 : end])) + "\n"
        fragment = bool(before) and before[-1] == FRAGMENT
        found.append(Block(page, index + 1, end + 1, opening["lang"], code, fragment))
        index = end + 1
    return found


def python_blocks() -> list[Block]:
    return [block for page in PAGES for block in blocks(page) if block.lang == "python"]


def run_block(block: Block, directory: Path) -> subprocess.CompletedProcess[str]:
    script = directory / "example.py"
    script.write_text(block.code, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )


def test_the_readme_example_runs_as_pasted_into_a_file(tmp_path: Path) -> None:
    example = python_blocks()[0]
    assert example.page == README
    assert not example.fragment

    result = run_block(example, tmp_path)

    assert result.returncode == 0, f"{example.where} failed:\n{result.stderr}"
    assert result.stdout == "completed ch-o-1\n"
    assert (tmp_path / "state.db").is_file()


@pytest.mark.parametrize(
    "block",
    [block for block in python_blocks()[1:] if not block.fragment],
    ids=lambda block: block.where,
)
def test_every_other_python_block_runs_unless_marked_a_fragment(
    block: Block, tmp_path: Path
) -> None:
    result = run_block(block, tmp_path)

    assert result.returncode == 0, (
        f"{block.where} does not run on its own; fix it or put {FRAGMENT} on the line before "
        f"it:\n{result.stderr}"
    )


def slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def prose(page: Path) -> list[str]:
    fenced = {number for block in blocks(page) for number in range(block.line, block.end + 1)}
    return [
        line
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if number not in fenced
    ]


def anchors(page: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in prose(page) if line.startswith("#")}


def relative_links() -> list[tuple[Path, str]]:
    return [
        (page, match["target"])
        for page in PAGES
        for line in prose(page)
        for match in LINK.finditer(INLINE_CODE.sub("", line))
        if not re.match(r"^[a-z][a-z0-9+.-]*:", match["target"])
    ]


@pytest.mark.parametrize(
    ("page", "target"),
    relative_links(),
    ids=lambda value: str(value.relative_to(ROOT)) if isinstance(value, Path) else str(value),
)
def test_every_relative_link_points_at_a_file_in_the_repository(page: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page

    assert resolved.is_relative_to(ROOT), f"{page.relative_to(ROOT)}: {target} leaves the repo"
    assert resolved.exists(), f"{page.relative_to(ROOT)}: {target} does not exist"
    if anchor and resolved.suffix == ".md":
        assert anchor in anchors(resolved), (
            f"{page.relative_to(ROOT)}: {target}: no heading #{anchor} in {path or 'this page'}"
        )
