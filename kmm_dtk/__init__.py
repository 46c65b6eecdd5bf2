"""kmm-dtk: keeps KMM driver images built against the driver-toolkit of every kernel in the cluster."""

__version__ = "0.1.0"
