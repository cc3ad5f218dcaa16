"""edgeweave: an operator for SD-WAN edge fleets."""

__version__ = "0.1.0"
GROUP = "edgeweave.io"
VERSION = "v1alpha1"
