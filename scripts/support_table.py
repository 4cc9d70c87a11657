"""Write docs/supported-models.md, a page generated from the families registry (its table and the
intro around it), or check that the committed page is what it generates.

    python scripts/support_table.py            # print the page
    python scripts/support_table.py --write    # rewrite docs/supported-models.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from accel.families import NOT_REGISTERED, registered_families

PAGE = Path(__file__).resolve().parent.parent / "docs" / "supported-models.md"
START, END = "<!-- support-table:start -->", "<!-- support-table:end -->"

INTRO = """# Supported models

`accel.apply(pipe, ...)` works on the transformer classes of diffusers 0.42
(`diffusers/models/transformers/`) registered in the `accel.families` package: image, video and
audio. It accelerates every transformer the pipeline calls: Wan 2.2's high- and low-noise experts
(`pipe.transformer`, `pipe.transformer_2`) each get their own handle, step context and caches,
returned together as one `PipelineHandle`. What a class cannot do is refused at `apply` with a
`ValueError` and nothing installed.

To ask about a pipeline folder before running anything, `accel inspect MODEL` prints its
transformer(s), whether each is registered or auto-detected, which methods apply and which presets
it gets, without generating.

Every row is tested on a tiny random instance of the real class (`tests/test_families_table.py`):
exact `.remove()`, every block cache saving block evaluations at batch 1 and 2, token methods where
marked (ratio 0 bit-identical, merging cuts FLOPs), and for pruning: pruned -> `save_pretrained` ->
plain-diffusers reload equals the original with those blocks bypassed.

## Reading the table

- *blocks accel acts on*: the block lists caches skip, token methods merge in and pruning removes
  from; H / EH / HE: the block returns hidden states, `(text, hidden)` or `(hidden, text)`.
- *always run*: block lists that are computed in full and never skipped: refiners (Z-Image,
  Lumina2), VACE and face-adapter blocks, Latte's temporal blocks, and the two-stream blocks in
  front of single-stream blocks that take `[text, image]` as one tensor (a cached run cannot span
  the two layouts). HunyuanDiT's first L/2-1 blocks feed long skips to the last ones, so accel
  acts only on the blocks after them.
- *tokens*: the image-token grid is known and the attention's rotary rows can follow merged
  tokens. Video grids are (frames, rows, cols): ToMe's strided destinations extend over frames
  (`tome` option `st`, frames per window; 1 = destinations in every frame).
- *pruning*: each block list's depth is one config entry (not for classes that index per-block
  settings such as WanVACE's `vace_layers` or HiDream's `llama_layers`).

A class that is not in the table is auto-detected, or registered in a few lines: see
[Adding a model family](developer-guide.md#adding-a-model-family).

## The table

This page is generated: `python scripts/support_table.py --write` rewrites it from the registry
(its text lives in that script), and `tests/test_support_table.py` checks that it matches.

"""


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


def page_text() -> str:
    """The whole page: the intro, then the registry's table between the markers."""
    return INTRO + START + "\n" + support_table() + END + "\n"


def page_table(text: str) -> str:
    """The generated table of a page's text (between the markers)."""
    if START not in text or END not in text:
        raise SystemExit(f"{PAGE}: no {START} ... {END} markers")
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def main(argv: list[str]) -> int:
    text = page_text()
    if "--write" not in argv:
        print(text, end="")
        return 0
    old = PAGE.read_text() if PAGE.is_file() else None
    PAGE.write_text(text)
    print(f"{PAGE}: {'unchanged' if old == text else 'rewritten'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
