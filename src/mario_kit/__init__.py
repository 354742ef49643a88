"""mario-kit: Super Mario Bros datasets and a DIAMOND diffusion world model."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mario-kit")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"


class UserError(Exception):
    """Bad input from the user: the CLI prints the message on one line and exits 2."""
