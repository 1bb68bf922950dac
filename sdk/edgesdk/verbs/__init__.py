"""The verbs users call (``deploy``, ``profile``, ``compare``, ``quantize``, ``calibrate``), on one
front half of the pipeline (``pipeline``)."""
