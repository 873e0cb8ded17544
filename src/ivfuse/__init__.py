"""ivfuse: semantic-driven infrared-visible image fusion."""

__version__ = "0.1.0"
