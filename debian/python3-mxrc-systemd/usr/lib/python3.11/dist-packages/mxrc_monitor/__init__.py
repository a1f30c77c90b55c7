"""mxrc-monitor: Prometheus metrics for the MXRC systemd units."""
