"""The layering contract (.importlinter) holds on the tree, and it catches an upward import,
including one hidden inside a function (what .ci/run relies on)."""
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

PACKAGES = ("core", "models", "serving", "pipeline")
LINT = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def _lint(root: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": root}
    return subprocess.run([LINT, "--no-cache", "--config", os.path.join(root, ".importlinter")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def _copy_tree(dst: str) -> None:
    shutil.copy(os.path.join(REPO, ".importlinter"), dst)
    for pkg in PACKAGES:
        shutil.copytree(os.path.join(REPO, pkg), os.path.join(dst, pkg),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tfserving"))


@pytest.mark.skipif(not os.path.exists(LINT), reason="import-linter is not installed in this environment")
def test_the_tree_keeps_the_contract(tmp_path):
    _copy_tree(str(tmp_path))
    proc = _lint(str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout


@pytest.mark.skipif(not os.path.exists(LINT), reason="import-linter is not installed in this environment")
@pytest.mark.parametrize("module, line", [
    ("models/mlp.py", "from pipeline import cli\n"),                               # model layer -> top
    ("core/errors.py", "def _late():\n    from serving import versions\n"),       # function-local, kernel -> serving
    ("serving/versions.py", "import pipeline.stages\n"),                           # serving -> pipeline
])
def test_an_upward_import_breaks_the_contract(tmp_path, module, line):
    _copy_tree(str(tmp_path))
    with open(os.path.join(tmp_path, module), "a", encoding="utf-8") as f:
        f.write("\n\n" + line)
    proc = _lint(str(tmp_path))
    assert proc.returncode != 0
    assert "BROKEN" in proc.stdout and module.split("/")[0] in proc.stdout


# --- every artifact goes through core/fs.py ---------------------------------------------------

_FORBIDDEN = {("os", "replace"), ("os", "rename"), ("os", "remove"), ("os", "makedirs"), ("os", "listdir"),
              ("os", "walk"), ("os", "scandir"), ("glob", "glob"), ("shutil", "move"), ("shutil", "rmtree"),
              ("shutil", "copy"), ("shutil", "copytree"), ("shutil", "copyfile")}


def _direct_file_calls(path: str) -> list[str]:
    import ast

    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id == "open":
            found.append(f"{path}:{node.lineno}: open(...)")
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and (f.value.id, f.attr) in _FORBIDDEN:
            found.append(f"{path}:{node.lineno}: {f.value.id}.{f.attr}(...)")
        elif (isinstance(f, ast.Attribute) and f.attr in ("exists", "isdir", "isfile", "getsize", "getmtime")
              and isinstance(f.value, ast.Attribute) and f.value.attr == "path"
              and isinstance(f.value.value, ast.Name) and f.value.value.id == "os"):
            found.append(f"{path}:{node.lineno}: os.path.{f.attr}(...)")
    return found


def test_artifact_io_goes_through_the_filesystem_layer():
    """No os/glob/shutil/open file calls in the packages outside core/fs.py: they would not reach
    gs://, s3:// or ram:// (and a rename is not atomic on an object store)."""
    import glob

    found = []
    for package in ("core", "models", "serving", "pipeline"):
        for path in sorted(glob.glob(os.path.join(REPO, package, "**", "*.py"), recursive=True)):
            if os.path.relpath(path, REPO) != os.path.join("core", "fs.py"):
                found += _direct_file_calls(path)
    assert found == [], "\n".join(found)
