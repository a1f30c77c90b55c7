"""dev/publish-repo makes a signed apt repository that apt accepts with signed-by=
and that refuses a tampered index (#12 item 1; the VM install from it is not done yet)."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def apt(tmp: Path, repo: Path, *args: str, keyring: Path | None = None) -> subprocess.CompletedProcess:
    """apt-get/apt-cache against only this repository, in a private state directory."""
    etc = tmp / "etc"
    (etc / "apt.conf.d").mkdir(parents=True, exist_ok=True)
    (etc / "preferences.d").mkdir(exist_ok=True)
    for d in ("state/lists/partial", "cache/archives/partial"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    (etc / "sources.list").write_text(f"deb [signed-by={keyring or repo / 'mxrc-archive-keyring.gpg'}] "
                                      f"file:{repo} trixie main\n")
    opts = ["-o", f"Dir::Etc={etc}", "-o", f"Dir::State={tmp / 'state'}", "-o", f"Dir::Cache={tmp / 'cache'}",
            "-o", "Dir::Etc::SourceParts=-", "-o", "Debug::NoLocking=1", "-o", "APT::Architecture=amd64"]
    return subprocess.run([args[0], *opts, *args[1:]], capture_output=True, text=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, debs):
    out = tmp_path_factory.mktemp("repo")
    env = {**os.environ, "MXRC_DEB_DIR": str(next(iter(debs.values())).parent)}
    proc = subprocess.run([str(ROOT / "dev/publish-repo"), "--repo", str(out)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_apt_reads_the_signed_repository(repo, tmp_path, debs):
    update = apt(tmp_path, repo, "apt-get", "update")
    assert update.returncode == 0 and "NO_PUBKEY" not in update.stderr, update.stdout + update.stderr
    policy = apt(tmp_path, repo, "apt-cache", "policy", "mxrc-systemd").stdout
    version = subprocess.run(["dpkg-deb", "-f", str(debs["mxrc-systemd"]), "Version"], capture_output=True,
                             text=True, check=True).stdout.strip()
    assert f"Candidate: {version}" in policy, policy


def test_a_repository_signed_by_another_key_is_refused(repo, tmp_path):
    other = tmp_path / "other.gpg"
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(["gpg", "--batch", "--quiet", "--passphrase", "", "--quick-gen-key", "other <o@localhost>",
                    "ed25519", "sign", "1d"], check=True, env=env, capture_output=True)
    other.write_bytes(subprocess.run(["gpg", "--batch", "--export", "other"], check=True, env=env,
                                     capture_output=True).stdout)
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, check=True)
    update = apt(tmp_path, repo, "apt-get", "update", keyring=other)
    assert "NO_PUBKEY" in update.stderr, update.stdout + update.stderr
    policy = apt(tmp_path, repo, "apt-cache", "policy", "mxrc-systemd", keyring=other).stdout
    assert "Candidate" not in policy or "Candidate: (none)" in policy, policy
