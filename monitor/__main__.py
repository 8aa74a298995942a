"""`python -m monitor` is the same as the `reelwatch` command."""

from monitor.launch import entry

entry()
