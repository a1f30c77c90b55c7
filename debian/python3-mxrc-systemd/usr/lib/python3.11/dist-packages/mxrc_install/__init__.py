"""mxrc-systemd: adapt the MXRC systemd units to the machine and manage them."""

__version__ = "0.1.0"
