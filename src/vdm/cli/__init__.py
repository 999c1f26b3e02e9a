"""The ``vdm`` command line."""
