"""Errors raised by adafv. Every message names the offending input and what would be accepted instead."""


class AdafvError(Exception):
    """Base class of every error adafv raises on purpose."""


class ConfigError(AdafvError, ValueError):
    """A setting is out of range or inconsistent (keep, mode, method, ...)."""


class ScoreError(AdafvError, ValueError):
    """Saliency or relevance tensors have the wrong shape, dtype or values (NaN, inf, negative)."""


class ModelError(AdafvError, LookupError):
    """A model name or checkpoint cannot be resolved or is of an architecture adafv does not support."""


class InputError(AdafvError, ValueError):
    """An image or prompt handed to a pipeline cannot be used."""
