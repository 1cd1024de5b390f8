"""careloop: precision healthcare marketing and patient engagement under PIPL."""

__version__ = "0.1.0"

__all__ = ["__version__"]
