"""adafv.serve: the runtime behind an OpenAI-compatible HTTP API (`adafv serve BUNDLE`). Torch-free: it imports
the runtime, FastAPI and uvicorn (the `serve` extra)."""
