"""The package version (a leaf module: the CLI and the codec demo read it without
importing the whole package)."""

__version__ = "0.1.0"
