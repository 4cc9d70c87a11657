"""The README's quick start runs as written, on a saved tiny pipeline of the same class.

Only what cannot run here is swapped, each swap checked to match the README once: the hub id for a
folder saved from `accel.testing`, bf16 on CUDA for float32 on the CPU, torch.compile's default
backend for `eager` (inductor needs a C compiler and minutes), and the 28-step call for a 10-step
call at the tiny model's size. So the front page cannot rot: a renamed function, a preset that stops
skipping blocks, or a `.remove()` that leaves the model changed fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"

# tiny pipelines that take plain-text prompts and round-trip save_pretrained: (builder, extra call kwargs)
TINY = {
    "sd3": ("tiny_text_pipeline", {"height": 32, "width": 32}),
    "qwen-image": ("tiny_prompt_pipeline", {"height": 32, "width": 32}),
    "wan22": ("tiny_prompt_pipeline", {"height": 16, "width": 16, "num_frames": 5}),
}


def quick_start() -> str:
    """The first Python code block under the README's "Quick start" heading."""
    text = README.read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "README: no ```python block under '## Quick start'"
    return blocks[0]


def _swap(code: str, old: str, new: str) -> str:
    assert code.count(old) == 1, f"README quick start: expected {old!r} once (update this test with the README)"
    return code.replace(old, new)


def runnable(code: str, folder: Path, call_kwargs: dict) -> str:
    hub_id = re.search(r'from_pretrained\(\s*"([^"]+)"', code)
    assert hub_id, "README quick start: no DiffusionPipeline.from_pretrained(\"ORG/NAME\", ...)"
    code = _swap(code, f'"{hub_id.group(1)}"', repr(str(folder)))
    code = _swap(code, "torch.bfloat16", "torch.float32")
    code = _swap(code, '.to("cuda")', '.to("cpu")')
    code = _swap(code, "accel.compile(pipe)", 'accel.compile(pipe, backend="eager")')
    extra = "".join(f", {k}={v!r}" for k, v in {**call_kwargs, "output_type": "pt"}.items())
    return _swap(code, "num_inference_steps=28", f"num_inference_steps=10{extra}")


def _output(result) -> torch.Tensor:
    return result.frames if hasattr(result, "frames") else result.images


@pytest.mark.parametrize("name", sorted(TINY))
def test_the_quick_start_runs_on_a_tiny_pipeline_of_that_class(name, tmp_path, capsys):
    import diffusers

    import accel.testing

    builder, call_kwargs = TINY[name]
    folder = tmp_path / name
    getattr(accel.testing, builder)(name).save_pretrained(str(folder))
    code = runnable(quick_start(), folder, call_kwargs)

    # the same call without accel, for the after-.remove() comparison
    plain = diffusers.DiffusionPipeline.from_pretrained(str(folder), dtype=torch.float32)
    plain.set_progress_bar_config(disable=True)
    prompt = re.search(r'pipe\("([^"]+)"', code).group(1)
    torch.manual_seed(0)
    reference = _output(plain(prompt, num_inference_steps=10, output_type="pt", **call_kwargs))

    scope: dict = {}
    torch.manual_seed(0)
    exec(compile(code, "<README quick start>", "exec"), scope)  # noqa: S102 - the repository's own README
    printed = capsys.readouterr().out

    pipe, handle = scope["pipe"], scope["handle"]
    accelerated = _output(scope["result"])
    assert accelerated.shape == reference.shape and torch.isfinite(accelerated).all()
    stats = handle.stats()
    total = stats["total"] if "total" in stats else stats
    assert total["block_evals"] < total["block_total"], f"the preset skipped no block: {total}"
    assert not torch.equal(accelerated, reference)  # the preset changed the computation...
    assert re.search(r"tuned[ _]on|generic cache settings", printed), printed  # ...and says where it was measured

    pipe.set_progress_bar_config(disable=True)
    torch.manual_seed(0)
    after = _output(pipe(prompt, num_inference_steps=10, output_type="pt", **call_kwargs))
    # removed: the plain model's images again (still regionally compiled, eager backend: same ops)
    torch.testing.assert_close(after, reference, rtol=0, atol=1e-5)
