"""The README runs as written: every ```bash block of README.md and of the docs' tutorial and
how-to pages, in the order written, from an empty folder, with only what the page says before
it. A block that is not meant to run says so in the line above it:

    <!-- readme-test: skip (why) -->

The test shortens what would take minutes by appending overrides to the commands that train
(SHORTER: fewer epochs and smaller steps; a command-line override wins over every preset), and
serves `dfkd data fetch` from a server on 127.0.0.1 made from the local copies of the datasets
(tests/test_data_fetch.py): it never edits the text. `dfkd` (and `python -m dfkd_cli`) run in
this process (conftest.dfkd_here: the same exit code and output, without seconds of start-up
each); any other command runs in bash; `source .venv/bin/activate` is what the test's own
interpreter already is. Every command must exit 0."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SHARED_DATA, dfkd_here

PAGES = ["README.md", "docs/tutorial.md", *sorted(
    str(p.relative_to(REPO)) for p in (REPO / "docs" / "howto").glob("*.md"))]
SKIP = re.compile(r"<!-- readme-test: skip \((.+)\) -->")
FILE = re.compile(r"<!-- readme-test: file (\S+) -->")
# appended to every command that trains: the shape of each run at a small fraction of its length
SHORTER = {"train-teacher": ["epochs=2", "batch_size=256", "progress_every=0"],
           "distill": ["epochs=3", "steps_per_epoch=2", "log_every=1", "checkpoint_every=0",
                       "progress_every=0"],
           "probe": ["epochs=2", "samples=64", "progress_every=0"]}


def blocks(page: Path) -> list[tuple[int, str, str, str | None]]:
    """(line, language, text, marker) of each fenced block of a page: the marker is why a bash
    block is skipped, or the file a block of code is (`<!-- readme-test: file NAME -->`, which
    the test writes where the commands run)."""
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        if lines[i].startswith("```") and lines[i].strip() != "```":
            start, language = i, lines[i].strip()[3:]
            i += 1
            body = []
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            above = lines[start - 1] if start else ""
            marker = SKIP.search(above) or FILE.search(above)
            found.append((start + 1, language, "\n".join(body),
                          marker.group(1) if marker else None))
        i += 1
    return found


def commands(text: str) -> list[list[str]]:
    """The block's commands as argument lists: continuation lines joined, a quoted argument
    kept whole across lines, comments dropped."""
    found, pending = [], ""
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the argument goes on on the next line
            continue
        pending = ""
        if words:
            found.append(words)
    assert not pending, f"an unclosed quote in: {pending}"
    return found


def run(words: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """One command as the page's reader would run it; returns (exit code, output)."""
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):  # VAR=value dfkd ...
        key, _, value = words.pop(0).partition("=")
        env = {**env, key: value}
    if words[:2] == ["source", ".venv/bin/activate"]:
        return 0, ""
    if words[0] == "export":
        for assignment in words[1:]:
            key, _, value = assignment.partition("=")
            env[key] = value
        return 0, ""
    if words[:3] == ["python", "-m", "dfkd_cli"]:
        words = ["dfkd", *words[3:]]
    if words[0] == "dfkd":
        args = words[1:]
        if args and args[0] in SHORTER and "--help" not in args and "--cfg" not in args:
            args = [*args, *SHORTER[args[0]]]
        paths = [str(cwd / p) for p in env.get("PYTHONPATH", "").split(":") if p]
        sys.path[:0] = paths  # PYTHONPATH=. as a new process would have it
        try:
            proc = dfkd_here(*args, cwd=cwd, env=env, check=False)
        finally:
            del sys.path[:len(paths)]
        return proc.returncode, proc.stdout + proc.stderr
    shell_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                 **env}
    proc = subprocess.run(shlex.join(words), shell=True, cwd=cwd, env=shell_env,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def mirror():
    """The public sources of the datasets, served on 127.0.0.1 from the local copies."""
    from test_data_fetch import Server, site

    with Server(site()) as server:
        yield server.env()


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/datasets (the mirror)")
@pytest.mark.parametrize("page", PAGES)
def test_the_page_runs_as_written(page, tmp_path, mirror):
    env = dict(mirror)
    ran = 0
    for line, language, text, marker in blocks(REPO / page):
        if language != "bash":
            if marker:  # the file the page asks you to write
                (tmp_path / marker).write_text(text + "\n")
            continue
        if marker:  # skipped, and the page says why
            continue
        for words in commands(text):
            code, output = run(list(words), tmp_path, env)
            assert code == 0, (f"{page}, the block at line {line}: `{shlex.join(words)}` "
                               f"exited {code}\n{output[-3000:]}")
            ran += 1
    assert ran, f"{page} has no block that runs"


def test_every_page_is_found_and_every_skip_says_why():
    assert {"README.md", "docs/tutorial.md", "docs/howto/datasets.md"} <= set(PAGES)
    for page in PAGES:
        text = (REPO / page).read_text()
        assert text.count("<!-- readme-test") == len(SKIP.findall(text)) + len(
            FILE.findall(text)), page
        for _, language, _, marker in blocks(REPO / page):
            assert marker is None or marker.strip(), page
