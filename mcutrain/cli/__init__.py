"""The ``mcutrain`` command line: git-style subcommands, one module each (``cmd_*.py``)."""
