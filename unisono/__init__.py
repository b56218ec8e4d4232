"""unisono: a toolkit for universal audio language models.

One transformer over discrete neural-codec tokens that generates and understands audio across many
tasks. See ``README.md`` for the two commands that set up and test the toolkit, and
``unisono --help`` for the command line.
"""

__version__ = "0.1.0"

from unisono.errors import UnisonoError

__all__ = ["UnisonoError", "__version__"]
