"""The installed version, read once at import (before any event loop runs: package
metadata is a file read)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aiogw")
except PackageNotFoundError:  # a bare checkout, not installed
    __version__ = "unknown"
