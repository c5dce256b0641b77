"""dlaasd: deep learning as a service on one GPU workstation."""

__version__ = "0.1.0"
