"""The documentation shows only what works: every pipeline spec, command line, ``make`` target,
import and module path in README.md and docs/*.md is checked against the code, and the site
builds with ``mkdocs build --strict``."""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from unittest import mock

import yaml

from shardflow.cli.main import main as shardflow_main
from shardflow.core.invocation import ScriptOptions
from shardflow.spec import PipelineSpec, SpecError, parse_spec

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PACKAGE = REPO / "plugins" / "shardflow"
SHELLS = {"console", "bash", "shell", "sh", "shell-session"}
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<language>[\w+-]*)")
_INLINE = re.compile(r"`([^`\n]+)`")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it starts, its language, and its text."""

    page: Path
    line: int
    language: str
    text: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def split_page(page: Path) -> tuple[list[Block], str]:
    """The page's fenced blocks, and its prose with the blocks left out."""
    blocks: list[Block] = []
    prose: list[str] = []
    lines = page.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            prose.append(lines[index])
            index += 1
            continue
        fence, indent, body = opening["fence"], len(opening["indent"]), []
        index += 1
        while index < len(lines) and not re.fullmatch(rf" *{fence[0]}{{{len(fence)},}}\s*", lines[index]):
            body.append(lines[index][indent:] if lines[index][:indent].isspace() else lines[index])
            index += 1
        start = index - len(body)
        blocks.append(Block(page, start, opening["language"].lower(), "\n".join(body)))
        index += 1
    return blocks, "\n".join(prose)


BLOCKS = [block for page in PAGES for block in split_page(page)[0]]


def command_lines(block: Block) -> Iterator[tuple[str, list[str]]]:
    """The commands a shell block shows: in a console block the lines after ``$ ``, in a script
    block every line; joined over trailing backslashes, with leading ``VAR=value`` words dropped."""
    pending: str | None = None
    for raw in block.text.splitlines():
        if pending is not None:
            pending += " " + raw.strip()
        elif block.language == "console":
            if not raw.startswith("$ "):
                continue
            pending = raw[2:]
        else:
            pending = raw
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        text, pending = pending.strip(), None
        words = shlex.split(text, comments=True)
        while words and _ASSIGNMENT.match(words[0]):
            words.pop(0)
        if words:
            yield text, words


def shell_commands() -> list[tuple[Block, str, list[str]]]:
    return [(b, text, words) for b in BLOCKS if b.language in SHELLS for text, words in command_lines(b)]


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace) -> None:
        self.namespace = namespace


def parse_shardflow(argv: list[str]) -> str | None:
    """Parse a ``shardflow`` command line with the real parser and stop before its command runs;
    the parser's complaint, or ``None`` when it accepts the line."""
    parse_args = argparse.ArgumentParser.parse_args

    def parse_only(
        self: argparse.ArgumentParser, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> NoReturn:
        raise _Parsed(parse_args(self, args, namespace))

    errors = io.StringIO()
    try:
        with (
            mock.patch.object(argparse.ArgumentParser, "parse_args", parse_only),
            contextlib.redirect_stderr(errors),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            shardflow_main(argv)
    except _Parsed as parsed:
        return None if callable(getattr(parsed.namespace, "run", None)) else "no command to run"
    except SystemExit as exit:
        return None if exit.code == 0 else errors.getvalue().strip() or f"exit {exit.code}"
    return "the command ran instead of stopping after its arguments were parsed"


def parse_script(argv: list[str]) -> str | None:
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            ScriptOptions.parse(argv)
    except SystemExit as exit:
        return None if exit.code == 0 else errors.getvalue().strip()
    return None


def make_targets() -> set[str]:
    targets: set[str] = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        rule = re.match(r"^([^\s#:=][^:=]*?)\s*::?(?!=)", line)
        if rule:
            targets.update(t for t in rule[1].split() if not t.startswith("."))
    return targets


def _make_problem(words: list[str], targets: set[str]) -> str | None:
    missing = [w for w in words[1:] if not w.startswith("-") and "=" not in w and w not in targets]
    return f"no Makefile target {', '.join(missing)}" if missing else None


def test_every_pipeline_spec_shown_parses():
    """A whole spec (it has ``name`` and ``model``) must parse as it is; a fragment (other spec
    fields only) must parse on top of the demo spec."""
    demo = yaml.safe_load((REPO / "dags" / "pipelines" / "demo.yaml").read_text())
    checked, problems = 0, []
    for block in (b for b in BLOCKS if b.language in ("yaml", "yml")):
        data = yaml.safe_load(block.text)
        if not isinstance(data, dict) or not data.keys() & PipelineSpec.model_fields.keys():
            continue
        spec = data if {"name", "model"} <= data.keys() else {**demo, **data}
        try:
            parse_spec(spec, str(block))
        except SpecError as error:
            problems.append(str(error))
        checked += 1
    assert not problems, "\n\n".join(problems)
    assert checked >= 5, f"only {checked} spec blocks found: has the fence syntax changed?"


def test_every_command_shown_parses_and_every_make_target_exists():
    targets = make_targets()
    counts = {"shardflow": 0, "make": 0, "script": 0}
    problems = []
    for block, text, words in shell_commands():
        program = Path(words[0]).name
        if program == "shardflow":
            kind, problem = "shardflow", parse_shardflow(words[1:])
        elif program == "make":
            kind, problem = "make", _make_problem(words, targets)
        elif re.fullmatch(r"python[\d.]*", program) and words[1:2] and words[1].endswith("batch_predict.py"):
            kind, problem = "script", parse_script(words[2:])
        else:
            continue
        counts[kind] += 1
        if problem:
            problems.append(f"{block}: `{text}`: {problem}")
    assert not problems, "\n".join(problems)
    assert counts["shardflow"] >= 10 and counts["make"] >= 5 and counts["script"] >= 1, counts


def test_the_parsers_refuse_what_the_docs_must_not_show():
    """The checks above can fail: a wrong subcommand, option or target is caught."""
    assert parse_shardflow(["pipelines", "check"]) is not None
    assert parse_shardflow(["jobs", "--pipeline", "demo", "--colour", "red"]) is not None
    assert parse_shardflow(["run", "dags/pipelines/demo.yaml"]) is not None  # --date is required
    assert parse_shardflow(["jobs", "--status", "FAILED"]) is None
    assert parse_script(["--workers", "2", "--shards", "3"]) is not None
    assert _make_problem(["make", "upp"], make_targets()) is not None
    assert _make_problem(["make", "bench", "BENCH=--quick"], make_targets()) is None


def test_every_python_import_shown_resolves():
    checked, problems = 0, []
    for block in (b for b in BLOCKS if b.language == "python"):
        for node in ast.walk(ast.parse(block.text)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for dotted in names:
                checked += 1
                problem = _unresolved(dotted)
                if problem:
                    problems.append(f"{block}: {problem}")
    assert not problems, "\n".join(problems)
    assert checked >= 1


def _unresolved(dotted: str) -> str | None:
    """Why ``dotted`` (a module, or a name inside one) cannot be imported; ``None`` when it can."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return f"{dotted}: {'.'.join(parts[:cut])} has no {attribute}"
            target = getattr(target, attribute)
        return None
    return f"{dotted}: no such module"


def _prose_spans() -> Iterator[tuple[Path, str]]:
    for page in PAGES:
        for span in _INLINE.findall(split_page(page)[1]):
            yield page, span.strip()


def test_names_in_the_prose_exist():
    """Dotted ``shardflow.*`` names, repository paths, ``SHARDFLOW_*`` variables and ``make``
    targets written inline in the prose."""
    targets = make_targets()
    code = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    missing_paths: dict[str, Path] = {}
    problems = []
    for page, span in _prose_spans():
        where = page.relative_to(REPO)
        if re.fullmatch(r"shardflow(\.[A-Za-z_]\w*)+", span):
            problem = _unresolved(span)
        elif re.fullmatch(r"(plugins|dags|processing_scripts|containers|infra|bench|tests|docs)/[\w./-]*", span):
            problem = None
            if not (REPO / span).exists():
                missing_paths[span] = where
        elif re.fullmatch(r"SHARDFLOW_[A-Z0-9_]*[A-Z0-9](=\S*)?", span):
            name = span.split("=")[0]
            problem = None if name in code else f"{name} is read nowhere in plugins/shardflow"
        elif span.startswith("make "):
            problem = _make_problem(shlex.split(span), targets)
        else:
            continue
        if problem:
            problems.append(f"{where}: `{span}`: {problem}")
    if missing_paths:  # generated folders (bench/data/, ...) are git-ignored; anything else must exist
        ignored = subprocess.run(
            ["git", "check-ignore", "--stdin"], input="\n".join(missing_paths), cwd=REPO, capture_output=True, text=True
        ).stdout.split()
        problems += [
            f"{where}: `{path}` does not exist" for path, where in missing_paths.items() if path not in ignored
        ]
    assert not problems, "\n".join(problems)


def test_the_readmes_links_lead_somewhere():
    text = (REPO / "README.md").read_text()
    links = [t for t in re.findall(r"\]\(([^)#\s]+)[^)]*\)", text) if "://" not in t]
    assert links and all((REPO / link).exists() for link in links), links


def test_the_architecture_page_lists_every_module():
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("### Modules", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([\w/]+\.py)` \|", section, flags=re.MULTILINE))
    actual = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")}
    assert listed == actual, f"not listed: {sorted(actual - listed)}; gone: {sorted(listed - actual)}"


def test_the_site_builds_strictly_and_loads_nothing_from_the_network(tmp_path):
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", "mkdocs.yml", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    pages = {p.name for p in site.glob("*.html")}
    assert {p.with_suffix(".html").name for p in (REPO / "docs").glob("*.md")} <= pages
    remote = re.compile(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.IGNORECASE)
    fetching = [p.name for p in site.rglob("*.html") if remote.search(p.read_text())]
    assert not fetching, f"pages that fetch from the network: {fetching}"
