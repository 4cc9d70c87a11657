"""Real (image, prompt) pairs for distilling a text-to-image flow model, and mixing them with teacher samples.

`accel distill --data digits` on the embedded flow model trains on the model's own training data
(the sklearn digits, train split, with its prompt templates: scripts/train_flow_model.py);
`--data DIR` on a user's flow pipeline reads DIR/*.png|jpg + DIR/prompts.json(l). A batch is noised
as the flow was trained (rectified flow: x_s = (1 − s) x_0 + s ε, s ~ logit-normal, timestep 1000 s)
and its task target is the true velocity ε − x_0, so `--lambda-task` weighs the flow-matching loss
next to the teacher's output and feature losses (accel/pruning/distill.py).

Everything a batch draws comes from the step's seeded generator (distill.py), so the data position
and RNG state are a function of (seed, step), both in the checkpoint's JSON: a resume is bit for bit.
Prompts are encoded once, by the pipeline's own frozen `encode_prompt`. Files are read bounded and
without unpickling; bad input raises a one-line ValueError.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import SettingError
from ..readers import parse_json, read_text

from .distill import Batch
from .images import encode_images

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
PROMPT_FILES = ("prompts.json", "prompts.jsonl")
MAX_IMAGES = 100_000
MAX_PROMPTS_BYTES = 64 * 2**20
MAX_PROMPT_CHARS = 2000
MAX_CACHED_PROMPTS = 2048  # more distinct prompts than this are encoded per batch instead of once up front
PROMPT_DROPOUT = 0.1  # the share of empty prompts (CFG), as the flow model was trained


def is_flow_text_pipeline(pipe: Any) -> bool:
    """A text-to-image pipeline with `encode_prompt` and a flow-matching scheduler (SD3-style calls)."""
    return hasattr(pipe, "encode_prompt") and "FlowMatch" in type(getattr(pipe, "scheduler", None)).__name__


class FlowPairData:
    """Real latents with prompts, noised on the fly as rectified flow (see the module docstring).

    `prompts[i]` holds image i's prompts (one is drawn per use); a `prompt_dropout` share becomes "".
    """

    shardable = True

    def __init__(self, pipe: Any, latents: torch.Tensor, prompts: Sequence[Sequence[str]],
                 prompt_dropout: float = PROMPT_DROPOUT, max_sequence_length: int | None = None):
        if len(latents) != len(prompts) or not len(latents):
            raise ValueError(f"{len(latents)} images but {len(prompts)} prompt lists")
        self.latents = latents
        self.prompts = [tuple(p) for p in prompts]
        if any(not p for p in self.prompts):
            raise ValueError("every image needs at least one prompt")
        self.prompt_dropout = prompt_dropout
        self.max_sequence_length = max_sequence_length or _default_sequence_length(pipe)
        unique = sorted({q for p in self.prompts for q in p} | {""})
        self.index = {q: i for i, q in enumerate(unique)}
        self.unique, self.pipe = unique, pipe
        self.embeds = self.pooled = None  # a large prompt set (a real model's T5 states) is encoded per batch
        if len(unique) <= MAX_CACHED_PROMPTS:
            self.embeds, self.pooled = _encode(pipe, unique, self.max_sequence_length)

    def __len__(self) -> int:
        return len(self.latents)

    def batch(self, g: torch.Generator, size: int, device: torch.device) -> Batch:
        n = len(self.latents)
        idx = torch.randint(0, n, (size,), generator=g)
        pick = torch.rand(size, generator=g)  # which of the image's prompts
        drop = torch.rand(size, generator=g) < self.prompt_dropout
        s = torch.sigmoid(torch.randn(size, generator=g))  # logit-normal, as SD3 trains
        x0 = self.latents[idx]
        noise = torch.randn(x0.shape, generator=g)
        rows = []
        for j, i in enumerate(idx.tolist()):
            options = self.prompts[i]
            rows.append(0 if drop[j] else self.index[options[min(int(pick[j] * len(options)), len(options) - 1)]])
        if self.embeds is not None:
            rows_t = torch.tensor(rows)
            embeds, pooled = self.embeds[rows_t], self.pooled[rows_t]
        else:
            embeds, pooled = _encode(self.pipe, [self.unique[r] for r in rows], self.max_sequence_length)
        sv = s.view(-1, *([1] * (x0.ndim - 1)))
        xt = (1 - sv) * x0 + sv * noise
        kwargs = dict(timestep=(s * 1000).to(device), encoder_hidden_states=embeds.to(device),
                      pooled_projections=pooled.to(device), return_dict=False)
        return Batch((xt.to(device),), kwargs, (noise - x0).to(device))  # target: the true velocity


class MixedData:
    """Each step draws from `data` with probability `weight`, else from `samples` (recorded teacher calls)."""

    shardable = False  # the two sources' batches differ; each process draws its own

    def __init__(self, data: Any, samples: Any, weight: float):
        if not 0.0 <= weight <= 1.0:
            raise SettingError("data_weight", f"must be in [0, 1], got {weight}")
        self.data, self.samples, self.weight = data, samples, weight

    def __len__(self) -> int:
        return len(self.data) + len(self.samples)

    def batch(self, g: torch.Generator, size: int, device: torch.device) -> Batch:
        use_data = float(torch.rand((), generator=g)) < self.weight
        return (self.data if use_data else self.samples).batch(g, size, device)


# ----------------------------------------------------------------------------- sources
def digits_flow_data(pipe: Any) -> FlowPairData:
    """The embedded flow model's training data: the digits train split with every prompt template of its digit."""
    from accel.models import load_digits_split
    from accel.models.flow import PROMPT_TEMPLATES, T5_ZERO_TOKENS, digit_prompt

    images, labels = load_digits_split("train")
    prompts = [[digit_prompt(int(y), t) for t in range(len(PROMPT_TEMPLATES))] for y in labels]
    return FlowPairData(pipe, images, prompts, max_sequence_length=T5_ZERO_TOKENS)


def prompt_folder_data(folder: str | os.PathLike, pipe: Any) -> FlowPairData:
    """`--data DIR` for a flow text-to-image pipeline: DIR's PNG/JPEG images and their prompts from
    DIR/prompts.json ({"file.png": "prompt" or ["prompt", ...]}) or DIR/prompts.jsonl (one
    {"file": ..., "prompt": ...} per line); resized to the model's resolution and VAE-encoded."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SettingError("data_dir", f"{folder}: no such folder")
    if not is_flow_text_pipeline(pipe):
        raise SettingError("data_dir", f"{folder}: image + prompt folders need a flow-matching text-to-image pipeline "
                         f"(got {type(pipe).__name__})")
    table = read_prompts(folder)
    latents = encode_images(pipe, [folder / name for name in table])
    return FlowPairData(pipe, latents, list(table.values()))


def read_prompts(folder: Path) -> dict[str, list[str]]:
    """{image file name: its prompts} from DIR/prompts.json or .jsonl, bounded and checked (one-line errors)."""
    found = [folder / n for n in PROMPT_FILES if (folder / n).is_file()]
    if len(found) != 1:
        raise SettingError("data_dir", f"{folder}: expected exactly one of {' or '.join(PROMPT_FILES)} next to the images "
                         f"(found {len(found)})")
    f = found[0]
    if f.stat().st_size > MAX_PROMPTS_BYTES:
        raise SettingError("data_dir", f"{f}: larger than {MAX_PROMPTS_BYTES // 2**20} MiB")
    try:
        text = read_text(f, what="prompts file", max_bytes=MAX_PROMPTS_BYTES)  # the one bounded reader
        if f.suffix == ".jsonl":
            rows = [parse_json(line, where=f"line {n}") for n, line in enumerate(text.splitlines(), 1) if line.strip()]
            if any(not isinstance(r, dict) or set(r) != {"file", "prompt"} for r in rows):
                raise ValueError('each line must be {"file": ..., "prompt": ...}')
            pairs = [(r["file"], r["prompt"]) for r in rows]
        else:
            doc = parse_json(text, where="prompts")
            if not isinstance(doc, dict):
                raise ValueError('expected an object {"file.png": "prompt", ...}')
            pairs = list(doc.items())
    except (UnicodeDecodeError, ValueError) as exc:
        raise SettingError("data_dir", f"{f}: {' '.join(str(exc).split())}") from None
    table: dict[str, list[str]] = {}
    for name, prompt in pairs:
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(name, str) or Path(name).name != name or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            raise SettingError("data_dir", f"{f}: {name!r} is not a {'/'.join(IMAGE_SUFFIXES)} file name in the folder")
        if not isinstance(prompts, list) or not prompts or any(not isinstance(p, str) or len(p) > MAX_PROMPT_CHARS
                                                               for p in prompts):
            raise SettingError("data_dir", f"{f}: the prompt of {name} must be a string (at most {MAX_PROMPT_CHARS} "
                             "characters) or a non-empty list of them")
        if not (folder / name).is_file():
            raise SettingError("data_dir", f"{f}: {name} is not in {folder}")
        table.setdefault(name, []).extend(prompts)
    if not table:
        raise SettingError("data_dir", f"{f}: no images listed")
    if len(table) > MAX_IMAGES:
        raise SettingError("data_dir", f"{f}: {len(table)} images, more than {MAX_IMAGES}")
    return table


def _default_sequence_length(pipe: Any) -> int:
    """The zero / T5 block length: the embedded flow model's fast one, else the tokenizer's (at most 256)."""
    if getattr(pipe, "text_encoder_3", None) is None:
        from accel.models.flow import T5_ZERO_TOKENS

        return T5_ZERO_TOKENS
    return min(256, int(getattr(pipe.tokenizer_3, "model_max_length", 256)))


@torch.no_grad()
def _encode(pipe: Any, prompts: list[str], max_sequence_length: int, chunk: int = 64) -> tuple[torch.Tensor, ...]:
    """(prompt_embeds, pooled) of every prompt, by the pipeline's own encode_prompt, on the CPU."""
    embeds, pooled = [], []
    for i in range(0, len(prompts), chunk):
        e, _, p, _ = pipe.encode_prompt(prompt=prompts[i:i + chunk], prompt_2=None, prompt_3=None,
                                        do_classifier_free_guidance=False, max_sequence_length=max_sequence_length,
                                        device=pipe.transformer.device)
        embeds.append(e.float().cpu())
        pooled.append(p.float().cpu())
    return torch.cat(embeds), torch.cat(pooled)
