"""Devices: the device-profile schema (``profile``) and the registry that finds profiles in plugins
and in the user's directories (``registry``)."""
