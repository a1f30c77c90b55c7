"""Compile and run the C++ header's tests (plain and under ASan/UBSan), and the reference RT loop."""

import re
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FLAGS = ["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pthread", f"-I{REPO / 'include'}"]


def compile_and_run(tmp_path, source, extra=()):
    binary = tmp_path / "a.out"
    subprocess.run(["g++", *FLAGS, *extra, str(source), "-o", str(binary)], check=True)
    return subprocess.run([str(binary)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("extra", [["-O2"], ["-O1", "-g", "-fsanitize=address,undefined",
                                             "-fno-sanitize-recover=all"]], ids=["plain", "sanitizers"])
def test_header_unit_tests(tmp_path, extra):
    proc = compile_and_run(tmp_path, REPO / "tests/cpp/test_systemd.cpp", extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith(" 0 failed") and "passed" in proc.stdout


@pytest.mark.parametrize("fake", ["@2026-01-01 00:00:00", "+0 x10"], ids=["frozen-start", "fast"])
def test_header_unit_tests_pass_under_faked_time(tmp_path, fake):
    """#15: reproducible-build tools run the build's tests under faketime;
    nothing here may need the real clock."""
    binary = tmp_path / "a.out"
    subprocess.run(["g++", *FLAGS, "-O2", str(REPO / "tests/cpp/test_systemd.cpp"), "-o", str(binary)],
                   check=True)
    proc = subprocess.run(["faketime", "-f", fake, str(binary)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip().endswith(" 0 failed"), proc.stdout + proc.stderr


def test_header_is_self_contained_and_warning_free_in_cxx20(tmp_path):
    source = tmp_path / "only.cpp"
    source.write_text("#include <mxrc/systemd.hpp>\n"
                      "int main() { return mxrc::systemd::notify(\"X=1\") ? 1 : 0; }\n")
    subprocess.run(["g++", *FLAGS, "-std=c++20", "-fsyntax-only", str(source)], check=True)


def test_reference_loop_builds_and_stops_on_sigterm(tmp_path):
    binary = tmp_path / "mxrc-rt"
    subprocess.run(["g++", *FLAGS, "-O2", str(REPO / "examples/mxrc-rt-reference.cpp"), "-o", str(binary)],
                   check=True)
    proc = subprocess.Popen([str(binary)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"PATH": "/usr/bin:/bin"})
    try:
        out, err = proc.communicate(timeout=1.5)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    # Outside systemd the journal entry falls back to stderr; SIGTERM ends it cleanly.
    assert proc.returncode == 0, err
    assert "MESSAGE=mxrc-rt reference loop started:" in err and "mlockall=" in err


def notifications(tmp_path, env: dict, enough) -> tuple[list[str], str]:
    """Run the reference loop outside systemd (a socket stands in for NOTIFY_SOCKET) until
    enough(messages) says so; its messages and stderr."""
    binary = tmp_path / "mxrc-rt"
    subprocess.run(["g++", *FLAGS, "-O2", str(REPO / "examples/mxrc-rt-reference.cpp"), "-o", str(binary)],
                   check=True)
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(20)
        proc = subprocess.Popen([str(binary)], stderr=subprocess.PIPE, text=True,
                                env={"PATH": "/usr/bin:/bin", "NOTIFY_SOCKET": path, **env})
        try:
            messages = []
            while not enough(messages):
                messages.append(server.recv(4096).decode())
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=10)
    return messages, err


def test_reference_loop_triggers_the_watchdog_when_its_heartbeat_stalls(tmp_path):
    """End to end outside systemd: hang:1 stops the beats."""
    messages, err = notifications(
        tmp_path, {"WATCHDOG_USEC": "30000000", "MXRC_FAULT": "hang:1", "MXRC_STALL_BUDGET_MS": "100"},
        lambda got: any("WATCHDOG=trigger" in m for m in got))
    assert any(m.startswith("READY=1") and "stall_budget_ms=100" in m for m in messages), messages
    assert "WATCHDOG=1" in messages  # it pinged while the loop beat
    trigger = messages[-1]
    assert re.fullmatch(r"STATUS=control loop stalled: no heartbeat for \d+ ms \(budget 100 ms\)\n"
                        r"WATCHDOG=trigger", trigger), trigger
    assert "injected hang: the loop stops beating" in err


def test_reference_loop_runs_at_the_period_it_is_given(tmp_path):
    """MXRC_PERIOD_US (the VM test bed's 250 Hz): STATUS= reports the rate and the cycles of each second."""
    messages, _ = notifications(tmp_path, {"MXRC_PERIOD_US": "4000"},
                                lambda got: sum(", 250 Hz, " in m for m in got) >= 2)
    reports = [m for m in messages if ", 250 Hz, " in m]
    cycles = [int(re.search(r"\((\d+) cycles\)", r).group(1)) for r in reports]
    assert all(200 <= n <= 251 for n in cycles), reports   # one second's wake-ups, not 1000


MAIN = """#include <mxrc/systemd.hpp>
int main() {
    mxrc::systemd::Heartbeat heartbeat;
    mxrc::systemd::Watchdog watchdog(heartbeat);
    watchdog.set_stall_budget(std::chrono::milliseconds(100));
    watchdog.start();
    heartbeat.beat();
    return mxrc::systemd::notify("READY=1") ? 1 : 0;
}
"""


def doc_block(language: str, containing: str = "") -> str:
    """A fenced code block of docs/integration.md: the examples the doc shows are the ones built here."""
    text = (REPO / "docs/integration.md").read_text()
    blocks = re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)
    found = [b for b in blocks if containing in b]
    assert found, f"docs/integration.md has no ```{language} block containing {containing!r}"
    return found[0]


@pytest.fixture
def pkgconfig_env(tmp_path):
    """mxrc-systemd.pc as debian/rules installs it, pointing at this tree's include/."""
    pc_dir = tmp_path / "pkgconfig"
    pc_dir.mkdir()
    template = (REPO / "include/mxrc-systemd.pc.in").read_text()
    (pc_dir / "mxrc-systemd.pc").write_text(template.replace("prefix=/usr", f"prefix={REPO}")
                                            .replace("@VERSION@", "0"))
    (tmp_path / "main.cpp").write_text(MAIN)
    return {"PATH": "/usr/bin:/bin", "PKG_CONFIG_PATH": str(pc_dir)}


def test_documented_pkg_config_command_builds(tmp_path, pkgconfig_env):
    command = doc_block("sh", "pkg-config --cflags --libs mxrc-systemd").strip()
    subprocess.run(["sh", "-ec", command], cwd=tmp_path, env=pkgconfig_env, check=True)
    assert subprocess.run([str(tmp_path / "mxrc-controller")], env={}).returncode == 0


def test_documented_cmake_project_builds(tmp_path, pkgconfig_env):
    # cmake comes from dev/deps: MXRC's own builds use it, so the doc's example must work.
    (tmp_path / "CMakeLists.txt").write_text(doc_block("cmake"))
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(tmp_path), "-B", str(build)], env=pkgconfig_env, check=True,
                   capture_output=True)
    subprocess.run(["cmake", "--build", str(build)], env=pkgconfig_env, check=True, capture_output=True)
    assert subprocess.run([str(build / "mxrc-controller")], env={}).returncode == 0
