"""The one reader of systemd's INI dialect (unit files, drop-ins, journald.conf)."""

from mxrc_install import unitfile

TEXT = """# comment
[Unit]
After=a.service b.service
; another comment
After=
Description = spaced = value

[Service]
ExecStart=/bin/true
ExecStart=/bin/false
not an assignment
"""


def test_assignments_keep_order_sections_and_line_numbers():
    got = [(a.section, a.key, a.value, a.line) for a in unitfile.assignments(TEXT)]
    assert got == [("Unit", "After", "a.service b.service", 3), ("Unit", "After", "", 5),
                   ("Unit", "Description", "spaced = value", 6),
                   ("Service", "ExecStart", "/bin/true", 9), ("Service", "ExecStart", "/bin/false", 10)]


def test_sections_keep_every_value_of_a_repeated_key():
    got = unitfile.sections(TEXT)
    assert got["Unit"]["After"] == ["a.service b.service", ""]
    assert got["Service"]["ExecStart"] == ["/bin/true", "/bin/false"]
    assert unitfile.sections("") == {}
