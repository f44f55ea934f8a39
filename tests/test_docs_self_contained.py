"""The repository stands on its own: no file names a path outside it, and every ``docs/`` citation resolves.

Docstrings used to send readers to reference notes outside the repository (where a fresh clone has nothing);
those facts now live under docs/. This keeps it that way.
"""

from __future__ import annotations

import ast
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.targets.registry import PROVIDERS

ROOT = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve()

#: Text files a reader follows references in (sources, docs, configuration, build files).
TEXT_SUFFIXES = frozenset({".py", ".md", ".json", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".ini", ".sh"})
TEXT_NAMES = frozenset({"Makefile"})
#: Only used when git cannot list the files (e.g. an exported tree without .git).
SKIPPED_DIRS = frozenset({".git", ".venv", "venv", "node_modules", "__pycache__", ".demo", ".pytest_cache",
                          ".ruff_cache", ".mypy_cache", ".chalice/deployments"})

#: The shared workspace this project was written in, and its reference notes reached by relative paths.
OUTSIDE_PATH = re.compile(r"/work/|\.\./shared\b|(?<![\w.-])shared/(?:reference|fixtures|DESIGN)")
#: A ``docs/...`` path as prose cites it; not the ``/docs/`` inside a URL such as https://circleci.com/docs/x.
DOCS_PATH = re.compile(r"(?<![\w./-])docs/[\w./-]*")
#: A relative Markdown link target (external links and pure anchors are not files).
MD_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)\s]*)?\)")


def repo_files() -> list[Path]:
    """Tracked files plus new ones not ignored (so a file is checked before its first commit)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True, timeout=60,
        ).stdout.decode().split("\0")
        paths = {ROOT / name for name in listed if name}
    except (OSError, subprocess.SubprocessError):
        paths = {p for p in ROOT.rglob("*") if not _skipped(p)}
    return sorted(p for p in paths if p.is_file() and (p.suffix in TEXT_SUFFIXES or p.name in TEXT_NAMES))


def _skipped(path: Path) -> bool:
    relative = path.relative_to(ROOT).as_posix()
    return any(relative == d or relative.startswith(d + "/") or f"/{d}/" in f"/{relative}"
               for d in SKIPPED_DIRS)


def outside_paths(text: str) -> list[str]:
    """Each line of ``text`` that names a path outside the repository, as ``<line>: <text>``."""
    return [f"{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1) if OUTSIDE_PATH.search(line)]


def docstrings(source: str) -> Iterator[str]:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield doc


def cited_docs_paths(text: str) -> list[str]:
    # A citation can end a sentence: the full stop is not part of the path.
    return [match.rstrip(".") for match in DOCS_PATH.findall(text)]


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def test_the_detectors_recognise_what_they_guard_against() -> None:
    # Without this a pattern that matches nothing would let every other test here pass vacuously.
    assert outside_paths("Contract: " + "/work" + "/shared/reference/ci-apis.md section 1.")
    assert outside_paths("See " + ".." + "/shared/reference/moto-local-aws.md for why.")
    assert outside_paths("copied from " + "shared" + "/fixtures/events")
    assert not outside_paths("local/emulators/shared_state.py and https://docs.github.com/en/rest")
    assert cited_docs_paths("Contract: docs/ci-providers/github.md. See https://circleci.com/docs/webhooks/.") == [
        "docs/ci-providers/github.md"
    ]
    assert list(docstrings('"""Module."""\n\ndef f():\n    """See docs/x.md."""\n')) == ["Module.", "See docs/x.md."]


def test_the_file_listing_sees_the_code_and_the_docs() -> None:
    files = {p.relative_to(ROOT).as_posix() for p in repo_files()}
    assert {"app.py", "docs/README.md", "docs/local-aws.md", "local/moto_patches.py"} <= files


def test_no_file_names_a_path_outside_the_repository() -> None:
    found = {
        path.relative_to(ROOT).as_posix(): hits
        for path in repo_files()
        # This file has to spell the forbidden patterns out.
        if path.resolve() != THIS_FILE and (hits := outside_paths(_read(path)))
    }
    assert not found, f"paths outside the repository (put the facts under docs/ and cite those): {found}"


def test_every_docs_path_a_docstring_cites_exists() -> None:
    missing: dict[str, list[str]] = {}
    cited = 0
    for path in repo_files():
        if path.suffix != ".py" or path.resolve() == THIS_FILE:
            continue
        try:
            docs = list(docstrings(_read(path)))
        except SyntaxError as exc:
            pytest.fail(f"{path.relative_to(ROOT)} does not parse: {exc}")
        for doc in docs:
            for target in cited_docs_paths(doc):
                cited += 1
                if not (ROOT / target).exists():
                    missing.setdefault(path.relative_to(ROOT).as_posix(), []).append(target)
    assert not missing, f"docstrings cite docs that do not exist: {missing}"
    # The provider clients, their emulators and the moto patches all point into docs/.
    assert cited >= 12


def test_every_relative_link_in_docs_resolves() -> None:
    broken: dict[str, list[str]] = {}
    for path in repo_files():
        relative = path.relative_to(ROOT)
        if path.suffix != ".md" or relative.parts[0] != "docs":
            continue
        for target in MD_LINK.findall(_read(path)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
                continue
            if not (path.parent / target).resolve().exists():
                broken.setdefault(relative.as_posix(), []).append(target)
    assert not broken, f"links to files that do not exist: {broken}"


@pytest.mark.parametrize("provider", PROVIDERS.names())
def test_each_provider_client_and_emulator_cite_their_contract(provider: str) -> None:
    page = f"docs/ci-providers/{provider}.md"
    assert (ROOT / page).is_file()
    for module in (f"chalicelib/targets/{provider}.py", f"local/emulators/{provider}.py"):
        module_doc = ast.get_docstring(ast.parse(_read(ROOT / module))) or ""
        assert page in cited_docs_paths(module_doc), f"{module}'s docstring does not cite {page}"
