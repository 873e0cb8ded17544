"""ivfuse: semantic-driven infrared-visible image fusion."""

__version__ = "0.1.0"

from .fuser import Fuser, fuse_folder

__all__ = ["Fuser", "fuse_folder"]
