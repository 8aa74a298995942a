"""reelwatch's pipeline: feeds.yaml -> fetch -> parse -> classify -> storage."""

__version__ = "0.1.0"  # the one place the version lives (pyproject reads it)

USER_AGENT = f"reelwatch/{__version__} (+https://github.com/reelwatch/reelwatch; feed monitor)"
