"""reelwatch's pipeline: feeds.yaml -> fetch -> parse -> classify -> storage."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("reelwatch")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

USER_AGENT = f"reelwatch/{__version__} (+https://github.com/reelwatch/reelwatch; feed monitor)"
