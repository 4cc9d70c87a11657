"""Print docs/pipelines.md (every tested pipeline class x method) from accel/testing_pipelines.py, or write it.

    python scripts/pipelines_table.py            # print
    python scripts/pipelines_table.py --write    # (re)write docs/pipelines.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from accel.testing_pipelines import docs_page

PAGE = Path(__file__).resolve().parent.parent / "docs" / "pipelines.md"


def main(argv: list[str]) -> int:
    page = docs_page()
    if "--write" not in argv:
        print(page, end="")
        return 0
    old = PAGE.read_text() if PAGE.is_file() else None
    PAGE.parent.mkdir(exist_ok=True)
    PAGE.write_text(page)
    print(f"{PAGE}: {'unchanged' if old == page else 'written'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
