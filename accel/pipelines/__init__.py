"""Pipeline wrapper and loader."""

from .loader import load_pipeline
from .wrapper import AcceleratedPipeline

__all__ = ["AcceleratedPipeline", "load_pipeline"]
