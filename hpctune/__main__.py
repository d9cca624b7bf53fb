"""`python -m hpctune ...` runs the command line."""

from hpctune.cli import main

main()
