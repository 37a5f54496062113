"""forkserve: a pre-fork WSGI server for several apps, reconciled live against one site file."""

__version__ = "0.1.0"
__all__ = ["__version__"]
