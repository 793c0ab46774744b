"""``python -m actors``: the ``trio-actors`` command (see ``actors._system._cli``)."""

import sys

from ._system._cli import main

if __name__ == "__main__":
    sys.exit(main())
