"""Purifiers: an inversion problem per input, then the classifier sees its solution."""
from .base import Purifier, PurifierError, resolve_step
from .generator import GeneratorPurifier
from .reverse import ReversePurifier

__all__ = ["Purifier", "PurifierError", "GeneratorPurifier", "ReversePurifier", "resolve_step"]
