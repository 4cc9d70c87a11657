"""Pipeline wrapper and the one model loader."""

from .loader import Embedded, LoadedModel, load_model, load_pipeline, set_scheduler
from .wrapper import AcceleratedPipeline

__all__ = ["AcceleratedPipeline", "Embedded", "LoadedModel", "load_model", "load_pipeline", "set_scheduler"]
