"""``python -m flowforge``: the command line (see :mod:`flowforge.cli`)."""

from .cli import main

if __name__ == "__main__":
    main()
