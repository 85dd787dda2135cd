"""llama-harness: declarative, reproducible llama.cpp builds and MTP-aware model work."""

__version__ = "0.1.0"
