import sys

from mcutrain.cli.main import main

sys.exit(main())
