"""wattledger: power, thermal and energy-cost monitoring for GPU fleets."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wattledger")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
