"""One home for hushing Hugging Face's own output while accel loads or writes a pipeline.

diffusers and transformers print progress bars ("Loading pipeline components", "Writing model
shards") and warnings ("self.tokenizer_3=None ... cannot be saved", "Expected types for vae") that
say nothing to an accel user (the embedded models' identity VAE and missing third encoder are on
purpose). `hf_quiet()` turns them off for the duration of a block and restores what was set before.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def hf_quiet(bars: bool = True, warnings: bool = True) -> Iterator[None]:
    """Within the block: no diffusers/transformers progress bars (`bars`) and only their errors logged
    (`warnings`: diffusers' logger, where the save/load notices come from)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    had_bars, had_tbars, level = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled(), dlog.get_verbosity()
    if bars:
        dlog.disable_progress_bar()
        tlog.disable_progress_bar()
    if warnings:
        dlog.set_verbosity_error()
    try:
        yield
    finally:
        dlog.set_verbosity(level)
        if bars and had_bars:
            dlog.enable_progress_bar()
        if bars and had_tbars:
            tlog.enable_progress_bar()
