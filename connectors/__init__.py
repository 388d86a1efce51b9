"""kafka-cdp edges: host intercepts, object stores, restore and replica consumers, the CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kafka-cdp")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
