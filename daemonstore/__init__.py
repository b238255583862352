"""daemonstore: ChromeOS daemon-store machinery on a verified model of mount propagation."""

__version__ = "0.1.0"
