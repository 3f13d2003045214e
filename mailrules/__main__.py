"""`python -m mailrules`: the command line."""

from mailrules.cli import entry

entry()
