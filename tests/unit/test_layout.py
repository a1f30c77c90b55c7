"""The package's biggest boundary, kept by a test: the installer pipeline
(run by the postinst and at every boot) never imports the operator tools."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mxrc_install"


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_pipeline_never_imports_the_operator_tools():
    offenders = {str(p.relative_to(PACKAGE)): sorted(m for m in imported_modules(p)
                                                     if m.startswith("mxrc_install.ops"))
                 for p in (PACKAGE / "pipeline").glob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_shared_vocabulary_imports_neither_layer():
    shared = [p for p in PACKAGE.glob("*.py") if p.name not in ("cli.py", "__main__.py")]
    offenders = {p.name: sorted(m for m in imported_modules(p)
                                if m.startswith(("mxrc_install.ops", "mxrc_install.pipeline")))
                 for p in shared}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_every_import_of_the_package_names_something_that_exists():
    """`from mxrc_install import doctor` after doctor moved to ops/ fails only when run."""
    init = (PACKAGE / "__init__.py").read_text()
    missing = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mxrc_install"):
                base = PACKAGE.parent.joinpath(*node.module.split("."))
                for alias in node.names:
                    sub = base / alias.name
                    exists = (sub.with_suffix(".py").exists() or sub.is_dir()
                              or (base.with_suffix(".py").exists()
                                  and alias.name in base.with_suffix(".py").read_text())
                              or (node.module == "mxrc_install" and alias.name in init))
                    if not exists:
                        missing.add(f"{path.relative_to(PACKAGE)}: from {node.module} import {alias.name}")
    assert missing == set()


def test_the_boundary_check_sees_an_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from mxrc_install.ops import doctor\nimport mxrc_install.ops.live\n")
    assert {"mxrc_install.ops", "mxrc_install.ops.doctor", "mxrc_install.ops.live"} <= imported_modules(bad)


def test_every_finding_the_code_raises_is_registered():
    """One home for each finding: its severity and doctor status come from mxrc_install.findings."""
    from mxrc_install import findings
    raised = set()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        raised |= set(re.findall(r'Finding\("([a-z0-9-]+)"', text))
        raised |= set(re.findall(r"\[([a-z][a-z0-9]*(?:-[a-z0-9]+)+)\]", text))   # printed: "WARNING [id]"
        raised |= set(re.findall(r'\(\w+, "([a-z]+-cycle)"', text))
    assert raised - set(findings.REGISTRY) == set()
    # the scan sees all three forms
    assert {"isolcpus-missing", "ordering-cycle", "dropin-admin-owned"} <= raised


def test_test_modules_have_names_of_their_own():
    """pytest imports test files by basename (rootdir-less): two test_x.py in different tiers clash."""
    names = [p.name for p in (PACKAGE.parent / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
