import sys

from aiogw.cli import main

sys.exit(main())
