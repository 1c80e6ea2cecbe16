"""`python -m vlmft_cli`: the same CLI as the `vlmft` console script (torchrun starts it this way)."""

from vlmft_cli.cli.app import main

if __name__ == "__main__":
    main()
