"""The runtime's errors, as the runtime's modules import them: they live in the one hierarchy (adafv.errors)."""

from adafv.errors import (  # noqa: F401 - re-exported for the runtime's modules and its users
    BundleError,
    EngineError,
    ImageError,
    OptionError,
    PromptError,
    RuntimeFailure,
    first_line,
)
