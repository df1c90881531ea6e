"""`python -m encodec_hf ...`: the `encodec-hf` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
