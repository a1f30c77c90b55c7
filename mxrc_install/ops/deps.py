"""FR-022: what the MXRC units wait for, what can start in parallel, the critical chain, any loop.

Built on unitgraph's edges (unit files plus drop-ins, as systemd loads
them), so the answer holds for this machine's configuration, admin
drop-ins included; pure, and weighted by measured boot times when known.
"""

from __future__ import annotations

import dataclasses

from mxrc_install import names, unitfile

from mxrc_install.pipeline import unitgraph

ANALYSED = (names.HARDWARE_CHECK, *names.SERVICES, names.TARGET)


@dataclasses.dataclass(frozen=True)
class Analysis:
    waves: list            # [[unit, ...], ...]: each wave starts once the previous ones are up
    critical_chain: list   # [unit, ...] earliest first
    chain_seconds: float | None
    waits_for: dict        # unit -> outside units it is ordered after
    default_dependencies: dict   # unit -> bool
    cycles: list           # [description]


def _default_dependencies(root, unit) -> bool:
    value = True
    for path in unitgraph.unit_files(root, unit):
        for a in unitfile.assignments(root.read_text(path) or ""):
            if a.section == "Unit" and a.key == "DefaultDependencies":
                value = a.value.lower() not in ("no", "false", "0", "off")
    return value


def analyse(root, durations: dict | None = None) -> Analysis:
    edges = unitgraph.read_edges(root, ANALYSED)
    units = set(ANALYSED)
    after = {u: set() for u in units}   # unit -> MXRC units it starts after
    outside = {u: set() for u in units}
    for e in edges:
        earlier, later = e.ordering if e.key in unitgraph.ORDERING_KEYS else (None, None)
        if earlier is None:
            continue
        if earlier in units and later in units:
            after[later].add(earlier)
        elif later in units and earlier != "shutdown.target":
            outside[later].add(earlier)
    cycles = [unitgraph.describe(c)
              for c in (unitgraph.ordering_cycle(edges), unitgraph.requirement_cycle(edges))
              if c]
    waves, placed = [], set()
    while len(placed) < len(units):
        wave = sorted(u for u in units - placed if after[u] <= placed)
        if not wave:  # a loop: what remains cannot be ordered
            waves.append(sorted(units - placed))
            break
        waves.append(wave)
        placed |= set(wave)
    chain, seconds = _critical_chain(units, after, durations or {}) if not cycles else ([], None)
    return Analysis(waves, chain, seconds, {u: sorted(v) for u, v in outside.items() if v},
                    {u: _default_dependencies(root, u) for u in sorted(units)}, cycles)


def _critical_chain(units, after, durations):
    """The longest path by measured duration (by count of units when nothing is measured)."""
    best: dict[str, tuple[float, list]] = {}

    def longest(u):
        if u not in best:
            own = durations.get(u, 0.0 if durations else 1.0)
            prev = max((longest(p) for p in after[u]), key=lambda t: t[0], default=(0.0, []))
            best[u] = (prev[0] + own, prev[1] + [u])
        return best[u]
    total, chain = max((longest(u) for u in units), key=lambda t: (t[0], len(t[1])))
    return chain, (round(total, 3) if durations else None)


def analysis_text(a: Analysis) -> str:
    lines = ["Start waves (units in one wave start in parallel):"]
    for i, wave in enumerate(a.waves, 1):
        lines.append(f"  {i}. {'  '.join(wave)}")
    lines.append("")
    lines.append("Critical chain: " + " -> ".join(a.critical_chain)
                 + (f"  ({a.chain_seconds:.3f} s measured at the last boot)" if a.chain_seconds else ""))
    lines.append("")
    lines.append("Waits for (outside MXRC):")
    for unit, waits in sorted(a.waits_for.items()):
        lines.append(f"  {unit}: {', '.join(waits)}")
    lines.append("")
    lines.append("DefaultDependencies (yes: also waits for sysinit.target and basic.target):")
    for unit, value in a.default_dependencies.items():
        lines.append(f"  {unit}: {'yes' if value else 'no'}")
    lines.append("")
    if a.cycles:
        lines.append("Dependency loops (systemd breaks these at boot by dropping a job):")
        lines += [f"  {c}" for c in a.cycles]
    else:
        lines.append("No dependency loop.")
    return "\n".join(lines) + "\n"
