"""The embedded default model (tiny class-conditional DiT on 32x32 digits) and FD-digits."""

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

__all__ = [
    "DEFAULT_SAMPLER",
    "SCHEDULERS",
    "WEIGHTS_DIR",
    "DigitsClassifier",
    "DigitsDiTPipeline",
    "IdentityVAE",
    "build_generator",
    "classifier_features",
    "fd_digits",
    "load_default_pipeline",
    "load_digits_classifier",
    "load_digits_split",
    "load_generator",
    "load_reference_stats",
    "make_scheduler",
    "to_classifier_input",
    "upsample_digits",
]
