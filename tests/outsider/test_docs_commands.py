"""Every shell command in the docs runs as written, so the docs and the code cannot drift.

The convention (docs/architecture.md, "Docs that run"):

* Runnable blocks are fenced code blocks opened with exactly ```` ```bash ```` in
  ``README.md``, ``docs/*.md`` and ``examples/**/*.md``. Synopses with placeholders
  (``FILE``, ``[--json]``) and sample output go in ```` ```text ```` blocks, which never run.
* One command per line; a line ending in ``\\`` continues on the next. Blank lines and lines
  starting with ``#`` are skipped; a trailing ``# comment`` is left to bash.
* Each command runs in its own ``bash -c`` from the root of a scratch copy of the repository
  (one copy per Markdown file; its blocks run in order, so a command may read what an
  earlier command of the same file wrote). It must exit 0 within the time limit (120 s
  unless the block says otherwise). The checkout itself is never written.
* Commands may read the published data as ``../shared/data/...`` (the copy sees it at the
  same relative path); a block that does is skipped where that folder is absent.
* A block whose first line is ``# docs-test: skip: <reason>`` is not run; the reason is
  required. ``# docs-test: timeout=<seconds>`` as the first line raises the per-command limit
  of that block. Any other ``# docs-test:`` line is an error.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
DEFAULT_TIMEOUT_S = 120.0
DIRECTIVE = "# docs-test:"
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^\n]*)$")


@dataclass(frozen=True)
class Block:
    """One ```bash block: where it is, its commands and its directives."""

    where: str  # ``file:line`` of the opening fence, the file relative to the repository
    commands: tuple[str, ...]  # logical commands, continuation lines joined
    skip: str | None = None  # the reason, when the block is skipped
    timeout_s: float = DEFAULT_TIMEOUT_S  # per command


def markdown_files(root: Path = ROOT) -> list[Path]:
    """README.md, docs/*.md and examples/**/*.md."""
    files = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return [*files, *sorted((root / "examples").rglob("*.md"))]


def fenced_blocks(text: str) -> list[tuple[int, str, list[str]]]:
    """(opening line, info string, body lines) of every fenced code block."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence, body, start = opening["fence"], [], i + 1
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        blocks.append((start, opening["info"].strip(), body))
        i += 1
    return blocks


def _directive(first: str, where: str) -> tuple[str | None, float]:
    """(skip reason, timeout) from a block's first line."""
    rest = first.strip()[len(DIRECTIVE) :].strip()
    if rest.startswith("skip"):
        reason = rest[len("skip") :].lstrip(" :—-").strip()
        if not reason:
            raise ValueError(f"{where}: '# docs-test: skip' needs a reason after it")
        return reason, DEFAULT_TIMEOUT_S
    timeout = re.fullmatch(r"timeout\s*=\s*(\d+(?:\.\d+)?)", rest)
    if timeout is None:
        raise ValueError(f"{where}: unknown directive {first.strip()!r}; allowed: skip, timeout=S")
    return None, float(timeout.group(1))


def commands_of(body: list[str]) -> list[str]:
    """Logical commands: comment and blank lines dropped, continuations joined."""
    commands: list[str] = []
    pending = ""
    for raw in body:
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        commands.append(pending + line)
        pending = ""
    if pending:
        commands.append(pending.strip())
    return commands


def bash_blocks(path: Path, root: Path = ROOT) -> list[Block]:
    """The ```bash blocks of one Markdown file, with their directives."""
    found = []
    for line, info, body in fenced_blocks(path.read_text(encoding="utf-8")):
        if info != "bash":
            continue
        where = f"{path.relative_to(root)}:{line}"
        skip, timeout_s = None, DEFAULT_TIMEOUT_S
        if body and body[0].strip().startswith(DIRECTIVE):
            skip, timeout_s = _directive(body[0], where)
        stray = [b for b in body[1:] if b.strip().startswith(DIRECTIVE)]
        if stray:
            raise ValueError(f"{where}: '# docs-test:' only works on a block's first line")
        found.append(Block(where, tuple(commands_of(body)), skip, timeout_s))
    return found


def run_command(command: str, cwd: Path, env: dict[str, str], timeout_s: float) -> str | None:
    """Run one command; None when it exits 0 in time, else what went wrong."""
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, so a timeout ends all of it
    )
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return f"ran past {timeout_s:g} s\n{output[-2000:]}"
    if process.returncode:
        return f"exited {process.returncode}\n{output[-2000:]}"
    return None


def _unless_data_missing(block: Block) -> Block:
    """``block``, skipped when it reads ``../shared`` and that folder is absent."""
    if block.skip is None and not SHARED.is_dir() and any("../shared" in c for c in block.commands):
        return Block(block.where, block.commands, f"needs {SHARED}, absent", block.timeout_s)
    return block


DOCS = [p for p in markdown_files() if any(b.commands for b in bash_blocks(p))]


Say = Callable[[str], None]


def run_blocks(blocks: list[Block], cwd: Path, env: dict[str, str], say: Say) -> str | None:
    """Run every command of ``blocks`` in order, announcing each with ``say`` (where it is,
    its position, the seconds elapsed) before it runs; the first problem, or None."""
    started = time.monotonic()
    total = sum(len(b.commands) for b in blocks)
    done = 0
    for block in blocks:
        for command in block.commands:
            done += 1
            elapsed = time.monotonic() - started
            say(f"  docs {block.where} [{done}/{total}, {elapsed:.0f} s]: {command[:120]}")
            problem = run_command(command, cwd, env, block.timeout_s)
            if problem is not None:
                return f"{block.where}: `{command}` {problem}"
    return None


def terminal_line(config: pytest.Config) -> Say:
    """Write a line to the terminal now, past pytest's output capture (a silent minute in
    a long docs file otherwise looks like a hang)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")

    def say(text: str) -> None:
        if reporter is None:
            return
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line(text)

    return say


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_docs_command_runs(
    path: Path,
    scratch_repo: Path,
    cli_environment: Callable[[], dict[str, str]],
    request: pytest.FixtureRequest,
) -> None:
    """Each ```bash command of this Markdown file exits 0 from the repository root; each is
    announced on the terminal as it starts."""
    blocks = [_unless_data_missing(b) for b in bash_blocks(path)]
    runnable = [b for b in blocks if b.skip is None and b.commands]
    if not runnable:
        pytest.skip("; ".join(f"{b.where}: {b.skip}" for b in blocks))
    problem = run_blocks(runnable, scratch_repo, cli_environment(), terminal_line(request.config))
    assert problem is None, problem


def test_each_command_is_announced_before_it_runs(tmp_path: Path) -> None:
    """run_blocks says where each command is, its position and the time so far, in order,
    and stops at the first that fails."""
    doc = tmp_path / "doc.md"
    doc.write_text("```bash\ntrue\necho hi\n```\n\n```bash\nfalse\ntrue\n```\n")
    said: list[str] = []
    problem = run_blocks(bash_blocks(doc, tmp_path), tmp_path, dict(os.environ), said.append)
    assert [line.split("]: ")[1] for line in said] == ["true", "echo hi", "false"]
    assert said[0].startswith("  docs doc.md:1 [1/4, ") and " s]: " in said[0]
    assert said[2].startswith("  docs doc.md:6 [3/4, ")
    assert problem is not None and problem.startswith("doc.md:6: `false` exited 1")


def test_skip_markers_give_a_reason_and_directives_are_known(tmp_path: Path) -> None:
    """The parser enforces the convention: a reason for every skip, only known directives."""
    doc = tmp_path / "doc.md"
    cases = {
        "# docs-test: skip\nsincere x\n": "needs a reason",
        "# docs-test: sometimes\nsincere x\n": "unknown directive",
        "sincere x\n# docs-test: skip: late\n": "only works on a block's first line",
    }
    for body, problem in cases.items():
        doc.write_text(f"```bash\n{body}```\n", encoding="utf-8")
        with pytest.raises(ValueError, match=problem):
            bash_blocks(doc, tmp_path)


def test_commands_are_split_joined_and_directed(tmp_path: Path) -> None:
    """Continuations join, comments go, text blocks never run, skip and timeout parse."""
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```bash\n# docs-test: timeout=300\n# a comment\nsincere a \\\n    --b c   # why\n\n"
        "sincere d\n```\n\n```text\nsincere FILE [--json]\n```\n\n"
        "```bash\n# docs-test: skip: needs a GPU\nsincere e\n```\n",
        encoding="utf-8",
    )
    first, second = bash_blocks(doc, tmp_path)
    assert first.commands == ("sincere a --b c   # why", "sincere d")
    assert first.timeout_s == 300 and first.skip is None and first.where == "doc.md:1"
    assert second.skip == "needs a GPU" and second.commands == ("sincere e",)


def test_the_docs_have_runnable_commands() -> None:
    """The suite finds the README's first session and the docs' examples (not nothing)."""
    names = {str(p.relative_to(ROOT)) for p in DOCS}
    assert {"README.md", "docs/experiments.md", "docs/workload.md"} <= names
