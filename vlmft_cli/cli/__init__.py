"""The command-line layer: Typer apps that parse options, build typed configs and call the library.

Nothing outside this package imports Typer or prints.
"""
