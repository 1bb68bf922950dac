"""Project and plugin scaffolds shipped with edgesdk (data, read through importlib.resources)."""
