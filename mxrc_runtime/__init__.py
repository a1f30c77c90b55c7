"""Runtime helpers for MXRC's Python processes: sd_notify and the watchdog."""
