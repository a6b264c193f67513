"""The docs hold: every python block of the README and of the library guide runs, every relative
link and repository path they name exists, no machine's paths or tracker numbers, and the API
reference builds from the docstrings without a warning."""
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Pages whose ```python blocks are run, each block alone, as a user would paste it.
RUN_BLOCKS = ("README.md", "docs/guides/library.md")
# Folders whose markdown is read for links and paths (besides the README and CHANGELOG).
MARKDOWN_DIRS = ("docs", "benchmarks", "tools", "checks")
# A path into the repository as docs name it: a top-level folder, then a file with its extension.
REPO_PATH = re.compile(r"(?<![\w./-])((?:stn|tests|benchmarks|tools|checks|configs|docs)/[\w./-]*?"
                       r"\.(?:py|md|sh|json|png|npz|cc|toml|txt))(?![\w])")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# `python -m MODULE` in a command: MODULE must be a module of this repository.
RUN_MODULE = re.compile(r"python -m (stn(?:\.\w+)+)")
# What the docs must never say: a path of a developer's machine or a tracker's number.
FORBIDDEN = {"a developer's path": re.compile(r"(?<![\w.])/(?:wor[k]|tm[p])/"),
             "a tracker's number": re.compile(r"\bissue [0-9]", re.IGNORECASE)}


def markdown_files() -> list[Path]:
    """README.md, CHANGELOG.md and every markdown file under MARKDOWN_DIRS (build output aside)."""
    files = [ROOT / name for name in ("README.md", "CHANGELOG.md") if (ROOT / name).exists()]
    for folder in MARKDOWN_DIRS:
        files += sorted(p for p in (ROOT / folder).rglob("*.md") if "_build" not in p.parts)
    return files


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """Every ```python fenced block of `page` as (first line number, source)."""
    blocks, lines = [], page.read_text().splitlines()
    start = None
    for number, line in enumerate(lines, 1):
        if start is None and line.strip() == "```python":
            start = number + 1
        elif start is not None and line.strip() == "```":
            blocks.append((start, "\n".join(lines[start - 1:number - 1])))
            start = None
    return blocks


def block_cases():
    for name in RUN_BLOCKS:
        page = ROOT / name
        if page.exists():
            for line, source in python_blocks(page):
                yield pytest.param(name, line, source, id=f"{name}:{line}")


@pytest.mark.parametrize("page,line,source", list(block_cases()))
def test_python_block_runs(page, line, source, tmp_path):
    """A block runs alone in a fresh interpreter from the repository root, where the README's
    commands run (so that no block leans on another's names or on a setting another made)."""
    script = tmp_path / "block.py"
    script.write_text(source)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, f"{page}:{line}: the block failed\n{result.stderr[-4000:]}"


def test_the_readme_runs_a_library_example():
    assert python_blocks(ROOT / "README.md"), "README.md has no ```python block"


def heading_anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the headings of `page`: lower case, punctuation dropped, spaces
    to hyphens, a repeated anchor numbered -1, -2, ..."""
    anchors, seen = set(), {}
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        text = line.lstrip("#").strip().lower()
        slug = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
        slug = slug.replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)


def test_relative_links_point_to_files_and_headings_that_exist():
    broken = []
    for page in markdown_files():
        for target in LINK.findall(without_code_blocks(page.read_text())):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: outside the repository
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: ({target})"
            if not resolved.exists():
                broken.append(f"{where} no file {path}")
            elif anchor and resolved.suffix == ".md" and anchor not in heading_anchors(resolved):
                broken.append(f"{where} no heading #{anchor} in {resolved.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def test_repository_paths_and_modules_named_in_the_docs_exist():
    missing = []
    for page in markdown_files():
        text = page.read_text()
        for path in sorted(set(REPO_PATH.findall(text))):
            if Path(path).stem.isupper():
                continue  # a placeholder: stn/experiments/tasks/NAME.py, configs/FILE.py
            if not (ROOT / path).exists():
                missing.append(f"{page.relative_to(ROOT)}: {path}")
        for module in sorted(set(RUN_MODULE.findall(text))):
            base = ROOT.joinpath(*module.split("."))
            if not (base.with_suffix(".py").exists() or (base / "__main__.py").exists()):
                missing.append(f"{page.relative_to(ROOT)}: python -m {module}")
    assert not missing, "\n".join(missing)


def test_docs_name_no_machine_path_and_no_tracker_number():
    found = []
    for page in markdown_files():
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for what, pattern in FORBIDDEN.items():
                if pattern.search(line):
                    found.append(f"{page.relative_to(ROOT)}:{number}: {what}: {line.strip()}")
    assert not found, "\n".join(found)


def test_readme_is_a_page_not_a_manual():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines, at most 150"


def test_api_reference_builds_without_warnings(tmp_path):
    """The README's build command, warnings as errors (CI installs the `docs` extra first)."""
    pytest.importorskip("sphinx")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(ROOT / "docs" / "api"), str(tmp_path / "api")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-6000:]
