"""Read a fake robot the way doctor does and run the isolation checks on it."""

from mxrc_install import names
from mxrc_install.ops import isolation, isolation_facts
from mxrc_install.pipeline import plan, probe
from mxrc_install.sysroot import SysRoot


def placement_of(root) -> plan.Placement:
    return plan.make_plan(probe.read_facts(SysRoot(root))).placement


def facts_of(root) -> isolation_facts.IsolationFacts:
    facts = probe.read_facts(SysRoot(root))
    return isolation_facts.read(SysRoot(root), facts.cpus.online, placement_of(root).rt_cpus,
                                facts.rt_group_sched, names.RT)


def checks_of(root, check_id: str | None = None, mode: str = "auto"):
    checks = isolation.run_checks(facts_of(root), placement_of(root), mode)
    if check_id is None:
        return checks
    return next(c for c in checks if c.id == check_id)
