"""The installer pipeline: probe -> plan -> render -> apply -> verify.

Run by the postinst and at every boot (mxrc-systemd-hardware.service), so it
stays small and never imports the operator tools in mxrc_install.ops (a unit
test keeps that rule).
"""
