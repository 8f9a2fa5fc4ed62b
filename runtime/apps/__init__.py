"""Applications on top of the runtime: the ``engram`` command line (``cli``), ``engram demo``
(``demo``), ``engram live`` (``live``) and its web page (``web``).

Nothing imports these modules but the ``engram`` entry point and the command registry.
"""
