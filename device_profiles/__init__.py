"""The built-in device profiles, as YAML data (read through importlib.resources)."""
