"""The embedded models and FD-digits.

* the default model: a tiny class-conditional DiT on 32x32 digits (``load_default_pipeline``);
* the flow model: a tiny text-to-image rectified-flow MMDiT in the stock
  ``StableDiffusion3Pipeline`` (``load_flow_pipeline``, ``--model flow``);
* the names of the embedded models and the folders derived from them (``lineage``).
"""

from accel.models.default import (
    DEFAULT_SAMPLER,
    SCHEDULERS,
    WEIGHTS_DIR,
    DigitsClassifier,
    DigitsDiTPipeline,
    IdentityVAE,
    build_generator,
    classifier_features,
    fd_digits,
    load_default_pipeline,
    load_digits_classifier,
    load_generator,
    load_reference_stats,
    make_scheduler,
    to_classifier_input,
)
from accel.models.flow import (
    FLOW_BENCH_STEPS,
    FLOW_FEW_STEP_SAMPLER,
    FLOW_SAMPLER,
    WEIGHTS_FLOW_DIR,
    digit_prompt,
    digit_prompts,
    flow_call_kwargs,
    flow_prompts,
    load_flow_pipeline,
)
from accel.models.digits import load_digits_split, upsample_digits
from accel.models.lineage import (
    EMBEDDED_MODELS,
    MARKER_FILE,
    digits_marker,
    embedded_root,
    is_digits_model,
    is_embedded,
    lineage_marker,
    load_digits_model,
    read_marker,
    sampler_defaults,
)

__all__ = [
    "DEFAULT_SAMPLER",
    "EMBEDDED_MODELS",
    "MARKER_FILE",
    "FLOW_BENCH_STEPS",
    "FLOW_FEW_STEP_SAMPLER",
    "FLOW_SAMPLER",
    "SCHEDULERS",
    "WEIGHTS_DIR",
    "WEIGHTS_FLOW_DIR",
    "DigitsClassifier",
    "DigitsDiTPipeline",
    "IdentityVAE",
    "build_generator",
    "classifier_features",
    "digits_marker",
    "digit_prompt",
    "digit_prompts",
    "flow_call_kwargs",
    "flow_prompts",
    "fd_digits",
    "embedded_root",
    "is_digits_model",
    "is_embedded",
    "lineage_marker",
    "load_default_pipeline",
    "load_digits_model",
    "load_digits_classifier",
    "load_digits_split",
    "load_flow_pipeline",
    "load_generator",
    "load_reference_stats",
    "make_scheduler",
    "read_marker",
    "sampler_defaults",
    "to_classifier_input",
    "upsample_digits",
]
