"""The embedded default model (tiny class-conditional DiT on 32x32 digits), FD-digits, and the named
embedded models and the folders derived from them (lineage)."""

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
from accel.models.digits import load_digits_split, upsample_digits
from accel.models.lineage import (
    EMBEDDED_MODELS,
    MARKER_FILE,
    digits_marker,
    is_digits_model,
    is_embedded,
    load_digits_model,
    read_marker,
    sampler_defaults,
)

__all__ = [
    "DEFAULT_SAMPLER",
    "EMBEDDED_MODELS",
    "MARKER_FILE",
    "SCHEDULERS",
    "WEIGHTS_DIR",
    "DigitsClassifier",
    "DigitsDiTPipeline",
    "IdentityVAE",
    "build_generator",
    "classifier_features",
    "digits_marker",
    "fd_digits",
    "is_digits_model",
    "is_embedded",
    "load_default_pipeline",
    "load_digits_model",
    "load_digits_classifier",
    "load_digits_split",
    "load_generator",
    "load_reference_stats",
    "make_scheduler",
    "read_marker",
    "sampler_defaults",
    "to_classifier_input",
    "upsample_digits",
]
