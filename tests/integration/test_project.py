"""Issue points 1 and 2 as far as they can be checked from outside: layout, build options,
README with the two set-up commands, .ci/run."""

import os

import harness

ROOT = harness.REPO_ROOT


def test_layout(t):
    for d in ("master", "worker", "common", "conf", "tests", "scripts", "packaging", "docs"):
        assert os.path.isdir(os.path.join(ROOT, d)), "missing directory %s/" % d
    with open(os.path.join(ROOT, "meson.build")) as f:
        mb = f.read()
    assert "c++20" in mb.lower(), "meson.build does not select C++20"
    assert "werror" in mb.lower() or "-Werror" in mb, "warnings are not errors"
    opts = ""
    p = os.path.join(ROOT, "meson_options.txt")
    if os.path.exists(p):
        opts = open(p).read()
    assert "sanitize" in (mb + opts), "no ASan/UBSan build option"


def test_readme(t):
    """README: what proxyd is, a feature table, set-up commands for Debian 12 that exist."""
    import re
    p = os.path.join(ROOT, "README.md")
    assert os.path.exists(p), "README.md missing"
    text = open(p).read()
    assert "proxyd" in text
    assert re.search(r"^\|.*\|\s*$", text, re.M) and "---" in text, "no feature table"
    assert "curl" in text, "no curl lines for the demo"
    assert "Debian" in text, "no Debian set-up"
    blocks = re.findall(r"```(?:sh|bash|console)?\n(.*?)```", text, re.S)
    assert len(blocks) >= 2, "expected the set-up commands in code blocks"
    for cmd in re.findall(r"(?:^|\s)((?:\./)?(?:scripts|\.ci)/[\w.-]+)", "\n".join(blocks)):
        f = os.path.join(ROOT, cmd.lstrip("./") if cmd.startswith("./") else cmd)
        assert os.access(f, os.X_OK), "README runs %s, which is missing or not executable" % cmd


def test_ci_run(t):
    p = os.path.join(ROOT, ".ci", "run")
    assert os.path.exists(p), ".ci/run missing"
    assert os.access(p, os.X_OK), ".ci/run is not executable"


def test_version_matches_meson(t):
    """--version and status report the version from meson.build."""
    import re
    with open(os.path.join(ROOT, "meson.build")) as f:
        m = re.search(r"version\s*:\s*'([^']+)'", f.read())
    assert m, "no version in meson.build"
    r = t.run([harness.PROXYD, "--version"])
    assert r.stdout.strip() == "proxyd " + m.group(1), (r.stdout, m.group(1))
