"""The docs' commands, run as a reader would run them (issue #16).

In docs/*.md and README.md:

- A fenced block whose info string is ``sh tested`` is run by ``bash -e -o pipefail``
  in a fresh temporary directory, with this project's virtualenv first on PATH (its
  ``ferrocorn``, ``python``, ``pip``), and must exit 0 within BLOCK_TIMEOUT seconds,
  leaving no process behind (a block that starts a server stops it itself).
- If the next fenced block is ``text output``, each of its non-empty lines must appear
  in what the tested block printed on stdout.
- A block ``python file=NAME`` (or ``sh file=NAME``...) is a file the reader saves: it
  is written into the temporary directory of every tested block after it in the same
  document. When examples/NAME exists it must be identical, so the quick starts'
  files in examples/ and the docs never drift apart.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
EXAMPLES = ROOT / "examples"
BLOCK_TIMEOUT = 120
FENCE = re.compile(
    r"^(?P<fence>```+|~~~+)(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S
)


@dataclass
class Block:
    doc: Path
    line: int
    words: list[str]
    attrs: dict[str, str]
    text: str
    files: list[Block] = field(default_factory=list)  # file= blocks before it
    output: Block | None = None  # the `text output` block right after it

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def parse(doc: Path) -> list[Block]:
    source = doc.read_text()
    blocks = []
    for match in FENCE.finditer(source):
        info = match.group("info").split()
        blocks.append(
            Block(
                doc=doc,
                line=source.count("\n", 0, match.start()) + 1,
                words=[w for w in info if "=" not in w],
                attrs=dict(w.split("=", 1) for w in info if "=" in w),
                text=match.group("body"),
            )
        )
    files: list[Block] = []
    for i, block in enumerate(blocks):
        if "file" in block.attrs:
            files.append(block)
        if block.words[:2] == ["sh", "tested"]:
            block.files = list(files)
            after = blocks[i + 1] if i + 1 < len(blocks) else None
            if after is not None and after.words[:2] == ["text", "output"]:
                block.output = after
    return blocks


ALL_BLOCKS = [b for doc in DOCS for b in parse(doc)]
TESTED = [b for b in ALL_BLOCKS if b.words[:2] == ["sh", "tested"]]
FILES = [b for b in ALL_BLOCKS if "file" in b.attrs]


def venv_env() -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(bin_dir.parent)
    env.pop("PYTHONPATH", None)
    return env


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("block", TESTED, ids=[b.id for b in TESTED])
def test_tested_block_runs(block: Block, tmp_path: Path) -> None:
    for f in block.files:
        path = tmp_path / f.attrs["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f.text)
    proc = subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", block.text],
        cwd=tmp_path,
        env=venv_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=BLOCK_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{block.id} ran past {BLOCK_TIMEOUT}s\n{out}\n{err}")
    deadline = time.monotonic() + 5
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = group_alive(proc.pid)
    if left:
        os.killpg(proc.pid, signal.SIGKILL)
    report = f"{block.id}:\n{block.text}\n--- stdout\n{out}\n--- stderr\n{err}"
    assert proc.returncode == 0, report
    assert not left, "left a process running\n" + report
    if block.output is not None:
        for line in block.output.text.splitlines():
            assert line.strip() in out, f"expected {line.strip()!r} in the output\n{report}"


@pytest.mark.parametrize("block", FILES, ids=[b.id for b in FILES])
def test_doc_file_matches_example(block: Block) -> None:
    example = EXAMPLES / block.attrs["file"]
    if example.exists():
        assert block.text == example.read_text(), f"{block.id} differs from {example}"


def test_every_quickstart_example_is_in_the_docs() -> None:
    shown = {b.attrs["file"] for b in FILES}
    for path in sorted(EXAMPLES.glob("quickstart_*")):
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            name = str(f.relative_to(EXAMPLES))
            assert name in shown, f"examples/{name} is not shown in any doc"


def test_the_docs_test_something() -> None:
    # A parsing slip must not turn this module into a silent no-op.
    docs_with_tests = {b.doc.name for b in TESTED}
    for name in ("index.md", "quickstart-fastapi.md", "quickstart-django.md", "faq.md"):
        assert name in docs_with_tests, f"docs/{name} has no `sh tested` block"
    assert "quickstart-litestar.md" in docs_with_tests


def test_index_links_every_doc() -> None:
    index = (ROOT / "docs/index.md").read_text()
    for doc in sorted((ROOT / "docs").glob("*.md")):
        if doc.name != "index.md":
            assert f"]({doc.name})" in index, f"docs/index.md does not link {doc.name}"


@pytest.mark.parametrize("doc", DOCS + [ROOT / "CHANGELOG.md"], ids=lambda d: d.name)
def test_relative_links_resolve(doc: Path) -> None:
    text = FENCE.sub("", doc.read_text())
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"{doc.name} links to {target}, which does not exist"
