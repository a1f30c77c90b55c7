"""The names of the units this package ships, spelled once."""

TARGET = "mxrc.target"
RT = "mxrc-rt.service"
NONRT = "mxrc-nonrt.service"
MONITOR = "mxrc-monitor.service"
HARDWARE_CHECK = "mxrc-systemd-hardware.service"
BOOT_TIME = "mxrc-boot-time.service"
FAILOVER_TEMPLATE = "mxrc-failover@.service"
ISOLATION = "mxrc-isolation.service"
# mxrc-rt alone, directly under the root cgroup (a dash in a slice name would nest
# it: mxrc-rt.slice is mxrc.slice/mxrc-rt.slice), so its cpuset can be an isolated partition.
RT_SLICE = "mxrc.slice"

# The long-running MXRC services, in start order.
SERVICES = (NONRT, RT, MONITOR)
