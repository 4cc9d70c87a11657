"""Every relative link and #anchor in README.md and docs/*.md resolves, with GitHub's anchor rules, and every
docs page is reachable from docs/index.md (the check `mkdocs build --strict` would make, without mkdocs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
# pages written on other branches (house-tests, pipelines): linked before they land; checked once they exist

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _prose(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code spans blanked."""
    out, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced and not line.startswith(("    ", "\t")):
            out.append((n, re.sub(r"(`+)(.+?)\1", lambda m: " " * len(m.group(0)), line)))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text (markup dropped) lower-cased, punctuation removed, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links -> their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"(\*\*|__|\*|_)(\S.*?)\1", r"\2", text)  # emphasis markers
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters of any script, digits and _
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Anchors GitHub makes for the headings of a Markdown text (a repeated slug gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(text: str) -> list[tuple[int, str]]:
    return [(n, m.group(1)) for n, line in _prose(text) for m in _LINK.finditer(line)]


def broken_links(page: Path) -> list[str]:
    """'line N: target (why)' for each relative link of `page` that does not resolve."""
    bad = []
    for n, target in links(page.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"line {n}: {target} (no such file)")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            bad.append(f"line {n}: {target} (no heading with anchor #{anchor} in {dest.name})")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    assert not broken_links(page), f"{page.relative_to(ROOT)}: " + "; ".join(broken_links(page))


def test_every_docs_page_is_linked_from_the_index():
    linked = {(DOCS / t.partition("#")[0]).resolve() for _, t in links((DOCS / "index.md").read_text())
              if not re.match(r"^[a-z][a-z0-9+.-]*:", t)}
    pages = {p.resolve() for p in DOCS.glob("*.md")}
    missing = sorted(p.name for p in pages - linked - {(DOCS / "index.md").resolve()})
    assert not missing, f"docs/index.md links no {', '.join(missing)}"


def test_the_readme_links_the_docs_and_stays_a_front_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert any(t.startswith("docs/index.md") for _, t in links(readme))


def test_github_anchor_rules():
    assert slug("`accel bench`") == "accel-bench"
    assert slug("Stacking, `accel tune` and presets") == "stacking-accel-tune-and-presets"
    assert slug("torch.compile") == "torchcompile"
    assert slug("Block caching: `delta-cache`, `interval-cache`") == "block-caching-delta-cache-interval-cache"
    assert slug("What's **new** in [v2](https://x.y)?") == "whats-new-in-v2"
    assert slug("Δ-DiT and ToMe") == "δ-dit-and-tome"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n### A") == {"a", "a-1", "a-2"}


def test_the_checker_reports_broken_links_and_anchors(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Some section\n")
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](other.md#some-section) [self](#title) [web](https://example.com/x)\n"
                    "[gone](missing.md) [bad anchor](other.md#nope) [bad self](#nope)\n"
                    "`[in code](missing.md)`\n\n```\n[fenced](missing.md)\n```\n")
    bad = broken_links(page)
    assert [b.split(" (")[0] for b in bad] == ["line 4: missing.md", "line 4: other.md#nope", "line 4: #nope"]


def test_the_readme_test_command_is_what_ci_runs():
    block = re.search(r"## Set up\n+```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README: no ```bash block under '## Set up'"
    install, tests = block.group(1).strip().splitlines()
    assert install.rstrip().endswith("accel bench")
    pytest_cmd = tests.rsplit("&&", 1)[1].strip()
    assert pytest_cmd.startswith("python -m pytest")
    assert pytest_cmd in (ROOT / ".ci" / "run").read_text(), ".ci/run no longer runs the README's test command"


def test_troubleshooting_names_every_error_type():
    import accel.errors

    page = (DOCS / "troubleshooting.md").read_text()
    types = [n for n, c in vars(accel.errors).items()
             if isinstance(c, type) and issubclass(c, Exception) and c.__module__ == "accel.errors"]
    assert len(types) >= 5 and not [n for n in types if n not in page]
