import sys

from forkserve.cli import main

sys.exit(main())
