"""The one place that knows diffusers model classes.

Each supported transformer class gets a `Family` entry: where its block lists are,
how a block is called and what it returns, how to read the image-token grid, and
where attention and the adaLN-modulated norm sit inside a block. Methods never
import a model class; they ask `family_of(model)` and work with `BlockIO`.

Adding a family is one `register(Family(...))` call, e.g. for a transformer whose
`blocks` take `(hidden_states, encoder_hidden_states, temb)` and return
`(hidden_states, encoder_hidden_states)`:

    from accel.families import BlockStack, Family, register
    register(Family(name="mymodel", class_name="MyTransformer3DModel",
                    stacks=(BlockStack("blocks", returns="HE"),)))

Blocks called with other argument names say so (`BlockStack("trunk", returns="HE",
hidden_arg="x", encoder_arg="ctx")` for `forward(self, x, ctx)`): `accel.apply` checks
them against the block's `forward` and names the parameters it really has.

That gives every block cache; token methods also need `token_grid` (and the sub-layer
names of `BlockStack`), depth pruning a `config_key` per stack. A class with no entry
is read by `detect` (block lists, signatures, return pattern from the first call).

Files: `types` (BlockStack, Family), `grids` (token-grid readers), `registry` (register,
family_of), `table` (the registered classes), `detection` (auto-detection and its rules),
`blocks` (BlockIO, BlockRef, blocks_of), `sublayers` (attention / MLP of a block),
`transformers` (resolve, transformers_of: the transformer(s) of a pipeline).
"""

from __future__ import annotations

from . import table  # noqa: F401  (registers the supported classes)
from .blocks import BlockIO, BlockRef, blocks_of
from .detection import detect
from .registry import family_of, register, registered_families, supported_classes
from .sublayers import SUBLAYERS, mergeable, sublayers_of
from .table import NOT_REGISTERED
from .transformers import resolve, transformers_of
from .types import RETURNS, BlockStack, Family, GridFn

__all__ = [
    "RETURNS", "SUBLAYERS", "NOT_REGISTERED", "BlockIO", "BlockRef", "BlockStack", "Family", "GridFn",
    "blocks_of", "detect", "family_of", "mergeable", "register", "registered_families", "resolve",
    "sublayers_of", "supported_classes", "transformers_of",
]
