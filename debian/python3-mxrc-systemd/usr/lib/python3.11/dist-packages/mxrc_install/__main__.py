import sys

from mxrc_install.cli import main

sys.exit(main())
