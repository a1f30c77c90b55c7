"""Bad input and faults against --root trees: a clear error or a correct result, never a
traceback, a write outside the root or a lost admin file (issue #11's table, and more).

Each row: what is done to a fresh machine, the command, the exit status and a part of
the message. Every row also checks the invariants: the admin's files inside the root
and a file outside it are untouched, nothing appears outside the root.
"""

import errno
import json
import logging
import os

import pytest
from sysroots import Hardware, build

from mxrc_install import cli
from mxrc_install.pipeline import apply, lock

CONF = "etc/mxrc/mxrc-systemd.conf"
RT_DIR = "etc/systemd/system/mxrc-rt.service.d"
ADMIN = f"{RT_DIR}/60-local.conf"
STATE = "var/lib/mxrc-systemd"


def put(rel, data):
    def setup(root):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return setup


def mkdir(rel):
    return lambda root: (root / rel).mkdir(parents=True, exist_ok=True)


def replace_with_dir(rel):
    def setup(root):
        (root / rel).unlink()
        (root / rel).mkdir()
    return setup


def symlink(rel, target_name):
    def setup(root):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(root.parent / target_name)
    return setup


def both(*setups):
    def setup(root):
        for s in setups:
            s(root)
    return setup


def applied(root):
    assert cli.main(["--root", str(root), "apply"]) == 0


def fail_syscall(name, code):
    """Make os.NAME fail with errno CODE while the command runs (see `faults`)."""
    return (name, code)


OK, ERR, WARN = 0, 1, 2
CASES = [
    # id, setup, args, exit status, part of the message (stderr for errors, stdout otherwise)
    ("config-not-utf8", put(CONF, b"[rt]\ncpus = 2\xff3\n"), ["apply"], ERR, "not UTF-8"),
    ("config-is-directory", mkdir(CONF), ["apply"], ERR, "is a directory"),
    ("config-nul", put(CONF, "[rt]\ncpus = 2\x003\n"), ["apply"], ERR, "NUL"),
    ("config-unknown-key", put(CONF, "[rt]\ncpu = 2\n"), ["apply"], ERR, "unknown setting rt.cpu"),
    ("config-no-section", put(CONF, "cpus = 2\n"), ["apply"], ERR, "mxrc-systemd.conf"),
    ("config-unicode-digit", put(CONF, "[rt]\npriority = ٨٠\n"), ["apply"], ERR, "whole number"),
    ("config-huge-cpu", put(CONF, "[rt]\ncpus = 0-4294967295\n"), ["apply"], ERR, "kernel's limit"),
    ("config-backwards", put(CONF, "[rt]\ncpus = 3-2\n"), ["apply"], ERR, "runs backwards"),
    ("config-listen-space", put(CONF, "[monitor]\nlisten = fe80::1%a b\n"), ["apply"], ERR, "not an IP"),
    ("config-memory-32M", put(CONF, "[rt]\nmemory_max = 32M\n"), ["apply"], ERR, "below 64M"),
    ("config-is-symlink-set", both(put("../elsewhere.conf", "[rt]\ncpus = 2-3\n"),
                                   symlink(CONF, "elsewhere.conf")),
     ["config", "rt.priority=70"], ERR, "is a symlink"),
    ("config-set-not-utf8", put(CONF, b"# \xff\n[rt]\n"), ["config", "rt.priority=70"], ERR, "not UTF-8"),
    ("config-set-unicode-digit", None, ["config", "rt.priority=²"], ERR, "whole number"),
    ("config-set-newline", None, ["config", "rt.cpus=2\n[x]"], ERR, "one line"),
    ("config-set-hash", None, ["config", "rt.cpus=2 # x"], ERR, "one line"),
    ("config-set-no-equals", None, ["config", "rt.cpus"], ERR, "KEY=VALUE"),
    ("config-set-unknown", None, ["config", "rt.nope=1"], ERR, "KEY=VALUE"),
    ("config-check-bad-ip", None, ["config", "--check", "monitor.listen=999.999.999.999"], ERR, "not an IP"),
    ("manifest-not-utf8", both(applied, put(f"{STATE}/owned-files", b"\xff\xfe garbage\n")),
     ["apply"], OK, "file(s) changed"),
    ("manifest-nul", both(applied, put(f"{STATE}/owned-files", b"\x00" * 100)), ["uninstall"], OK, ""),
    ("manifest-is-directory", mkdir(f"{STATE}/owned-files"), ["apply"], ERR, "not a regular file"),
    ("manifest-long-line", both(applied, put(f"{STATE}/owned-files", "a" * 100000 + "\n")), ["apply"], OK,
     ""),
    ("state-dir-is-file", put(STATE, "x"), ["apply"], ERR, "mxrc-systemd"),
    ("state-dir-symlink", both(mkdir("../elsewhere"), symlink(STATE, "elsewhere")), ["apply"], ERR,
     "symlink"),
    ("dropin-dir-symlink", both(mkdir("../elsewhere"), symlink(RT_DIR.replace("rt.", "nonrt."), "elsewhere")),
     ["apply"], WARN, "symlink"),
    ("dropin-dir-is-file", put("etc/systemd/system/mxrc-nonrt.service.d", "x"), ["apply"], ERR,
     "a file is where a directory"),
    ("dropin-is-directory", mkdir("etc/systemd/system/mxrc-nonrt.service.d/50-mxrc-hardware.conf"),
     ["apply"], WARN, "not a regular file"),
    ("var-lib-symlink-out", both(mkdir("../elsewhere/lib"), symlink("var/lib", "elsewhere/lib")),
     ["apply"], ERR, "symlink"),
    ("hardware-json-list", both(applied, put(f"{STATE}/hardware.json", "[1, 2]")), ["boot-check"], OK, ""),
    ("hardware-json-not-utf8", both(applied, put(f"{STATE}/hardware.json", b"\xff")), ["boot-check"], OK, ""),
    ("hardware-json-number", both(applied, put(f"{STATE}/hardware.json", "1e999999")), ["boot-check"], OK,
     ""),
    ("hardware-json-is-dir", mkdir(f"{STATE}/hardware.json"), ["boot-check"], ERR, "directory"),
    ("cmdline-not-utf8", put("proc/cmdline", b"isolcpus=2-3\xff quiet\n"), ["apply"], WARN,
     "cmdline-unparsable"),
    ("cmdline-huge-range", put("proc/cmdline", "isolcpus=0-4294967295\n"), ["apply"], WARN, "kernel's limit"),
    ("cmdline-unicode-digit", put("proc/cmdline", "isolcpus=²-3\n"), ["apply"], WARN, "not a CPU number"),
    ("cmdline-nohz-only", put("proc/cmdline", "isolcpus=nohz,2-3\n"), ["apply"], WARN, "isolcpus-no-domain"),
    ("cmdline-managed-irq-only", put("proc/cmdline", "isolcpus=managed_irq,2-3\n"), ["apply"], WARN,
     "isolcpus-no-domain"),
    ("cmdline-unknown-flag", put("proc/cmdline", "isolcpus=bogus,domain,2-3\n"), ["apply"], WARN,
     "isolcpus-unknown-flag"),
    ("cmdline-two-isolcpus", put("proc/cmdline", "isolcpus=2-3 isolcpus=1\n"), ["apply"], WARN,
     "isolcpus-duplicate"),
    ("cmdline-invalid-flag", put("proc/cmdline", "isolcpus=no hz,2-3\n"), ["apply"], WARN, ""),
    ("cmdline-nul", put("proc/cmdline", b"isolcpus=2-3\x00\n"), ["apply"], WARN, ""),
    ("cpu-online-empty", put("sys/devices/system/cpu/online", ""), ["apply"], OK, ""),
    ("cpu-online-unicode", put("sys/devices/system/cpu/online", "0-³\n"), ["apply"], OK, ""),
    ("cpu-online-huge", put("sys/devices/system/cpu/online", "0-99999999\n"), ["apply"], OK, ""),
    ("cpu-online-not-utf8", put("sys/devices/system/cpu/online", b"\xff\n"), ["apply"], OK, ""),
    ("node-cpulist-huge", put("sys/devices/system/node/node0/cpulist", "0-4294967295\n"), ["plan"], OK, ""),
    ("meminfo-not-utf8", put("proc/meminfo", b"MemTotal: \xff kB\n"), ["apply"], OK, ""),
    ("osrelease-is-dir", replace_with_dir("proc/sys/kernel/osrelease"), ["plan"], OK, ""),
    ("json-error-plan", put(CONF, "[rt]\ncpus = x\n"), ["plan", "--json"], ERR, "not a CPU number"),
    ("json-error-config-dir", mkdir(CONF), ["plan", "--json"], ERR, "is a directory"),
    ("json-error-probe-root", None, ["--root", "/nonexistent-mxrc", "probe", "--json"], ERR,
     "not a directory"),
    ("root-nul", None, ["--root", "/tmp/a\x00b", "plan"], ERR, "not a directory"),
    ("root-too-long", None, ["--root", "/" + "a" * 5000, "plan"], ERR, "too long"),
    ("capture-into-used-dir", mkdir("../used/x"), ["capture", "{parent}/used"], ERR,
     "not an empty directory"),
    ("capture-into-file", put("../file", "x"), ["capture", "{parent}/file"], ERR, "not an empty directory"),
    ("uninstall-admin-edit", both(applied, put(f"{RT_DIR}/50-mxrc-hardware.conf", "# mine\n")),
     ["uninstall"], OK, "kept"),
    ("stale-temp-files", both(applied, put(f"{RT_DIR}/.50-mxrc-hardware.conf.abcd1234", "half"),
                              put(f"{STATE}/.owned-files.zz99yy88", "half")), ["apply"], OK, ""),
]


def faulted(name, code, when=lambda path: True):
    real = getattr(os, name)

    def fake(*args, **kwargs):
        if when(str(args[-1] if name == "replace" else args[0])):
            raise OSError(code, os.strerror(code), str(args[0]))
        return real(*args, **kwargs)
    return fake


FAULTS = [
    # id, syscall, errno, command, part of the message
    ("erofs-on-write", "replace", errno.EROFS, ["apply"], "read-only"),
    ("enospc-on-write", "replace", errno.ENOSPC, ["apply"], "full"),
    ("eacces-on-write", "replace", errno.EACCES, ["apply"], "root"),
    ("eio-on-write", "replace", errno.EIO, ["config", "rt.priority=70"], "I/O"),
    ("erofs-on-uninstall", "unlink", errno.EROFS, ["uninstall"], "read-only"),
    ("enospc-on-temp", "fsync", errno.ENOSPC, ["apply"], "full"),
]


@pytest.fixture(autouse=True)
def fresh_logging():
    """cli.main's logging.basicConfig binds the stderr of the test that ran it first."""
    yield
    for handler in logging.root.handlers[:]:
        if type(handler) is logging.StreamHandler:
            logging.root.removeHandler(handler)


@pytest.fixture
def machine(tmp_path):
    root = build(tmp_path / "root", Hardware(cpus=4, cmdline="isolcpus=2-3", preempt_rt=True))
    (root / RT_DIR).mkdir(parents=True)
    (root / ADMIN).write_text("[Service]\nNice=-5\n")
    (tmp_path / "outside-sentinel").write_text("keep\n")
    return root


def snapshot_outside(tmp_path):
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                  if "root" not in p.relative_to(tmp_path).parts[:1])


def invariants(root, before_outside):
    assert (root / ADMIN).read_text() == "[Service]\nNice=-5\n", "admin file lost"
    assert (root.parent / "outside-sentinel").read_text() == "keep\n"
    assert snapshot_outside(root.parent) == before_outside, "wrote outside the root"


def run(root, args, capsys):
    argv = [a.replace("{parent}", str(root.parent)) for a in args]
    if argv[0] != "--root":
        argv = ["--root", str(root), *argv]
    code = cli.main(argv)
    return code, capsys.readouterr()


@pytest.mark.parametrize("case_id, setup, args, status, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input(machine, capsys, case_id, setup, args, status, message):
    if setup:
        setup(machine)
    capsys.readouterr()
    before = snapshot_outside(machine.parent)
    code, out = run(machine, args, capsys)
    assert code == status, (out.out, out.err)
    assert "Traceback" not in out.err
    if status == ERR:
        line = out.err.strip().splitlines()[-1]
        assert line.startswith("mxrc-systemd: ") and message in line, out.err
    else:
        assert message in out.out, out.out
    if "--json" in args:
        error = json.loads(out.out)
        assert set(error) == {"error", "path"} and message in error["error"]
        if "config-dir" in case_id:
            assert error["path"] == str(machine / CONF)
    invariants(machine, before)


@pytest.mark.parametrize("case_id, name, code, args, message", FAULTS, ids=[f[0] for f in FAULTS])
def test_fault(machine, capsys, monkeypatch, case_id, name, code, args, message):
    applied(machine)
    (machine / "proc/cmdline").write_text("isolcpus=1-3\n")   # the next apply has work to do
    capsys.readouterr()
    manifest = (machine / STATE / "owned-files").read_text()
    before = snapshot_outside(machine.parent)
    monkeypatch.setattr(os, name, faulted(name, code))
    status, out = run(machine, args, capsys)
    monkeypatch.undo()
    assert status == ERR and "Traceback" not in out.err
    assert message in out.err.strip().splitlines()[-1], out.err
    invariants(machine, before)
    # Nothing half-written: each of our files is as before or as planned, and vouched for.
    owned = apply.read_manifest(apply.SysRoot(machine))
    for path, digests in owned.items():
        assert apply.sha256((machine / path.lstrip("/")).read_bytes()) in digests
    assert not [p for p in machine.rglob(".*.*") if p.is_file() and p.name.startswith(".50-")], \
        "temp file left"
    del manifest


def test_stale_temp_files_are_removed(machine, capsys):
    applied(machine)
    stale = [machine / RT_DIR / ".50-mxrc-hardware.conf.abcd1234", machine / STATE / ".owned-files.zz99yy88"]
    for p in stale:
        p.write_text("half")
    assert cli.main(["--root", str(machine), "apply"]) == 0
    assert not any(p.exists() for p in stale)


def test_permission_error_when_root_says_what_root_can_do(machine, capsys, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "replace", faulted("replace", errno.EPERM))
    assert cli.main(["--root", str(machine), "apply"]) == 1
    err = capsys.readouterr().err
    assert "run as root" not in err and "chattr" in err


def test_unreadable_config_is_not_replaced_by_defaults(machine, capsys, monkeypatch):
    (machine / CONF).parent.mkdir(parents=True)
    (machine / CONF).write_text("[rt]\ncpus = 3\n# mine\n")
    real = type(machine).read_bytes

    def denied(self):
        if self.name == "mxrc-systemd.conf":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)
    monkeypatch.setattr(type(machine), "read_bytes", denied)
    assert cli.main(["--root", str(machine), "config", "rt.priority=70"]) == 1
    monkeypatch.undo()
    assert "cannot be read" in capsys.readouterr().err
    assert (machine / CONF).read_text() == "[rt]\ncpus = 3\n# mine\n"


def test_lock_held_gives_a_clear_message_after_a_bounded_wait(machine, capsys, monkeypatch):
    monkeypatch.setattr(lock, "WAIT_SECONDS", 0.3)
    with lock.exclusive(apply.SysRoot(machine)):
        assert cli.main(["--root", str(machine), "apply"]) == 1
    assert "another mxrc-systemd is running" in capsys.readouterr().err
    assert not (machine / "etc/systemd/system/mxrc-nonrt.service.d").exists()
