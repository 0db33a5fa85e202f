"""The build's error, as export's modules import it: it lives in the one hierarchy (adafv.errors)."""

from adafv.errors import BuildError  # noqa: F401 - re-exported
