"""The pure model of Linux mount propagation (no os, no ctypes): see world.ModelHost."""

from daemonstore.model.world import ModelHost

__all__ = ["ModelHost"]
