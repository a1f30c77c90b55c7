"""The support bundle (#12 item 6): every item, no secrets, bounded, a readable tarball."""

import tarfile

from mxrc_install.ops import bundle


def fake_run(argv):
    if argv[0] == "journalctl":
        return 0, "x" * (bundle.MAX_ITEM + 10), ""
    if argv[:2] == ("systemctl", "cat"):
        return 0, ("[Service]\nEnvironment=ROBOT_ID=7 FIELDBUS_PASSWORD=hunter2 DB_KEY=k1\n"
                   "Environment=API_TOKEN=abc\nDescription=token handling\n"), ""
    if argv[:2] == ("mxrc-systemd", "doctor"):
        return 1, '{"checks": []}', "doctor: 1 FAIL"
    return 0, f"ran {' '.join(argv)}", ""


def test_collects_every_item_with_progress():
    seen = []
    items = bundle.collect(fake_run, seen.append)
    assert set(items) == {i.name for i in bundle.ITEMS}
    assert seen[0] == f"[1/{len(bundle.ITEMS)}] versions.txt" and len(seen) == len(bundle.ITEMS)


def test_secrets_are_redacted_and_other_values_kept():
    text = bundle.collect(fake_run)["units.txt"].decode()
    assert "hunter2" not in text and "abc" not in text and "k1" not in text
    assert "Description=token handling" in text
    assert "FIELDBUS_PASSWORD=<redacted>" in text and "API_TOKEN=<redacted>" in text and "ROBOT_ID=7" in text


def test_a_failed_command_leaves_its_error_and_output():
    text = bundle.collect(fake_run)["doctor.json"].decode()
    assert '{"checks": []}' in text and "exit 1" in text and "doctor: 1 FAIL" in text


def test_each_item_is_bounded():
    data = bundle.collect(fake_run)["journal.txt"]
    assert len(data) < bundle.MAX_ITEM + 100 and data.endswith(f"of {bundle.MAX_ITEM + 10}]\n".encode())


def test_tarball_holds_the_items_and_the_capture_tree(tmp_path):
    capture = tmp_path / "capture" / "proc"
    capture.mkdir(parents=True)
    (capture / "cmdline").write_text("isolcpus=2-3\n")
    out = tmp_path / "r.tar.gz"
    bundle.write_tar(out, {"a.txt": b"hello"}, tmp_path / "capture")
    with tarfile.open(out) as tar:
        names = tar.getnames()
        assert "mxrc-report/a.txt" in names and "mxrc-report/capture/proc/cmdline" in names
        assert tar.extractfile("mxrc-report/a.txt").read() == b"hello"
