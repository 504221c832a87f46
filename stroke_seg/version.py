"""The library's version (one home; ``stroke_seg.__version__`` re-exports it)."""

__version__ = "0.5.0"
