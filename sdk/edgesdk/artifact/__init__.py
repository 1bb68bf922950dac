"""The artifact directory: its file names and atomic placement (``files``), the manifest schema
(``manifest``), the check of its numerics against the reference (``verification``) and the
``Artifact`` object users load (``directory``)."""
