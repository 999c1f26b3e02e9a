"""Hooks around the provider call (chain of responsibility); see ``base``."""

from vdm.middleware.base import Call, Middleware
from vdm.middleware.chain import FACTORIES, Chain, build_chain

__all__ = ["FACTORIES", "Call", "Chain", "Middleware", "build_chain"]
