"""adafv.cli: the `adafv` command (the top floor: nothing imports it)."""
