"""Print the README's "Supported models" table from the family registry (accel/families/table.py), or
rewrite it in place. The generator lives here, not in the library: it is documentation.

    python scripts/support_table.py            # print
    python scripts/support_table.py --write    # replace the table between the README's markers
"""

from __future__ import annotations

import sys
from pathlib import Path

from accel.families import NOT_REGISTERED, registered_families

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- support-table:start -->", "<!-- support-table:end -->"


def support_table() -> str:
    """The README's "Supported models" table, generated from the registry."""
    yes = lambda ok: "yes" if ok else "-"  # noqa: E731
    fams = registered_families()
    rows = [f"{len(fams)} classes registered, {sum(f.media == 'video' for f in fams)} of them video.", "",
            "| class | media | blocks accel acts on | always run | caches | tokens | pruning |",
            "|---|---|---|---|---|---|---|"]
    for fam in fams:
        caps = fam.capabilities()
        stacks = ", ".join(f"`{s.attr}` ({s.returns})" + (" from block L/2-1" if s.first else "")
                           for s in fam.stacks)
        fixed = ", ".join(f"`{f}`" for f in fam.fixed) or "-"
        rows.append(f"| {fam.class_name} | {fam.media} | {stacks} | {fixed} | {yes(caps['cache'])} | "
                    f"{yes(caps['tokens'])} | {yes(caps['pruning'])} |")
    rows += ["", "Not registered (auto-detection still tries every unregistered class):", ""]
    rows += [f"- {name}: {why}" for name, why in sorted(NOT_REGISTERED.items())]
    return "\n".join(rows) + "\n"


def readme_table(text: str) -> str:
    """The generated part of a README text (between the markers)."""
    if START not in text or END not in text:
        raise SystemExit(f"{README}: no {START} ... {END} markers")
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def main(argv: list[str]) -> int:
    table = support_table()
    if "--write" not in argv:
        print(table, end="")
        return 0
    text = README.read_text()
    old = readme_table(text)
    head, rest = text.split(START, 1)
    README.write_text(head + START + "\n" + table + END + rest.split(END, 1)[1])
    print(f"{README}: support table {'unchanged' if old == table else 'rewritten'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
