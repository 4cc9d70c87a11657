"""Print the "Supported models" table (docs/supported-models.md) from the families registry, or rewrite
it in place.

    python scripts/support_table.py            # print
    python scripts/support_table.py --write    # replace the table between the page's markers
"""

from __future__ import annotations

import sys
from pathlib import Path

from accel.families import support_table

PAGE = Path(__file__).resolve().parent.parent / "docs" / "supported-models.md"
START, END = "<!-- support-table:start -->", "<!-- support-table:end -->"


def page_table(text: str) -> str:
    """The generated part of the page's text (between the markers)."""
    if START not in text or END not in text:
        raise SystemExit(f"{PAGE}: no {START} ... {END} markers")
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def main(argv: list[str]) -> int:
    table = support_table()
    if "--write" not in argv:
        print(table, end="")
        return 0
    text = PAGE.read_text()
    old = page_table(text)
    head, rest = text.split(START, 1)
    PAGE.write_text(head + START + "\n" + table + END + rest.split(END, 1)[1])
    print(f"{PAGE}: support table {'unchanged' if old == table else 'rewritten'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
