"""dnscache-agent: a local bind9 cache in front of the Amazon-provided DNS resolver."""

__version__ = "0.1.0"
