"""``python -m flaxmock``: see ``flaxmock._cli``."""

import sys

from flaxmock._cli import main

if __name__ == "__main__":
    sys.exit(main())
