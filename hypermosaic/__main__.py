"""`python -m hypermosaic` runs the command line."""

from hypermosaic.cli import main

main()
