"""The HTTP front door: a thin ASGI layer over :mod:`vdm.pipeline`."""
