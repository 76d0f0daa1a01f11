import sys

from neurowire.cli import main

sys.exit(main())
