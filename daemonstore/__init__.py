"""daemonstore: ChromeOS daemon-store machinery, with a verified model of Linux mount propagation."""

__version__ = "0.1.0"
