"""`python -m monitor` is the same as the `reelwatch` command."""

from monitor.cli import entry

entry()
