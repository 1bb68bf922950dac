"""The ``edgesdk`` command line: parses, calls the Python API, renders (``app`` builds it)."""
