import sys

from pairbert.cli import main

sys.exit(main())
