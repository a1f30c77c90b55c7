"""The dependency graph of the MXRC units as systemd would load it: unit files plus drop-ins.

Read through the SysRoot like any probe, so an admin's drop-in that closes a
loop (the spec's Requires + Wants edge case) is found before systemd has to
break it at boot, and reported with the file and line to change.
"""

from __future__ import annotations

import dataclasses

from mxrc_install import names, unitfile
from mxrc_install.sysroot import SysRoot

MXRC_UNITS = (names.TARGET, *names.SERVICES, names.HARDWARE_CHECK)

# Highest precedence first, as systemd searches them.
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
             "/usr/lib/systemd/system", "/lib/systemd/system")

REQUIREMENT_KEYS = ("Requires", "Wants", "BindsTo", "Requisite", "Upholds")
ORDERING_KEYS = ("After", "Before")


@dataclasses.dataclass(frozen=True)
class Edge:
    source: str  # the unit whose file says it
    target: str
    key: str     # Requires, Wants, After, Before, ...
    where: str   # file:line

    @property
    def ordering(self) -> tuple[str, str]:
        """(earlier, later) for an ordering edge."""
        return (self.target, self.source) if self.key == "After" else (self.source, self.target)


def unit_files(root: SysRoot, unit: str) -> list[str]:
    """The main file (first found) and every drop-in, in the order systemd applies them."""
    files = []
    for directory in UNIT_DIRS:
        path = f"{directory}/{unit}"
        if root.exists(path):
            files.append(path)
            break
    dropins: dict[str, str] = {}
    for directory in reversed(UNIT_DIRS):  # a higher-precedence dir masks a same-named drop-in
        for path in root.glob(f"{directory}/{unit}.d/*.conf"):
            dropins[path.rsplit("/", 1)[1]] = path
    return files + [dropins[name] for name in sorted(dropins)]


def parse_unit_section(text: str, path: str) -> dict[str, list[tuple[str, str]]]:
    """[Unit] dependency keys -> [(unit name, file:line)], an empty assignment clearing the list."""
    found: dict[str, list[tuple[str, str]]] = {}
    for a in unitfile.assignments(text):
        if a.section != "Unit" or a.key not in REQUIREMENT_KEYS + ORDERING_KEYS:
            continue
        if not a.value:
            found[a.key] = [("", f"{path}:{a.line}")]  # reset marker
            continue
        found.setdefault(a.key, []).extend((name, f"{path}:{a.line}") for name in a.value.split())
    return found


def read_edges(root: SysRoot, units=MXRC_UNITS) -> tuple[Edge, ...]:
    edges = []
    for unit in units:
        merged: dict[str, list[tuple[str, str]]] = {}
        for path in unit_files(root, unit):
            for key, values in parse_unit_section(root.read_text(path) or "", path).items():
                if values and values[0][0] == "":
                    merged[key] = values[1:]
                else:
                    merged.setdefault(key, []).extend(values)
        edges += [Edge(unit, target, key, where) for key, values in merged.items()
                  for target, where in values]
    return tuple(edges)


def find_cycle(nodes: set[str], arcs: dict[str, list[tuple[str, Edge]]]) -> list[Edge] | None:
    """One cycle as the edges that make it, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[Edge] = []

    def visit(node: str) -> list[Edge] | None:
        state[node] = 1
        for nxt, edge in arcs.get(node, []):
            stack.append(edge)
            if state.get(nxt) == 1:
                start = next(i for i, e in enumerate(stack) if _tail(e) == nxt)
                return stack[start:]
            if state.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
            stack.pop()
        state[node] = 2
        return None

    for node in sorted(nodes):
        if state.get(node) is None:
            found = visit(node)
            if found:
                return found
    return None


def _tail(edge: Edge) -> str:
    return edge.ordering[0] if edge.key in ORDERING_KEYS else edge.source


def ordering_cycle(edges) -> list[Edge] | None:
    arcs: dict[str, list[tuple[str, Edge]]] = {}
    for e in edges:
        if e.key in ORDERING_KEYS:
            earlier, later = e.ordering
            arcs.setdefault(earlier, []).append((later, e))
    return find_cycle(set(arcs), arcs)


def requirement_cycle(edges, units=MXRC_UNITS) -> list[Edge] | None:
    """A loop of pulls among the services (a target wanting its members is no loop)."""
    arcs: dict[str, list[tuple[str, Edge]]] = {}
    for e in edges:
        if e.key in REQUIREMENT_KEYS and e.target in units and not e.source.endswith(".target"):
            arcs.setdefault(e.source, []).append((e.target, e))
    return find_cycle(set(arcs), arcs)


def describe(cycle: list[Edge]) -> str:
    return "; ".join(f"{e.source} {e.key}={e.target} ({e.where})" for e in cycle)
