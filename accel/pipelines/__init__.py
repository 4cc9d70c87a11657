"""Pipeline wrapper and the one model loader."""

from .loader import LoadedModel, load_model, load_pipeline, set_scheduler
from .wrapper import AcceleratedPipeline

__all__ = ["AcceleratedPipeline", "LoadedModel", "load_model", "load_pipeline", "set_scheduler"]
