"""``python -m actors``: the ``trio-actors`` command (see ``actors._cli``)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
