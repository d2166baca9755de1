"""The project's promises: the README's two commands, CI runs the test one, requirements pinned."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_starts_with_run_and_test_commands():
    run, test = readme_commands()[:2]
    assert run.endswith("streamlit run app.py") and "requirements.txt" in run
    assert "pytest" in test and "requirements.txt" in test


def test_ci_runs_the_readme_test_command():
    assert readme_commands()[1] in (ROOT / ".ci" / "run").read_text()


def test_requirements_pin_the_stack():
    reqs = (ROOT / "requirements.txt").read_text()
    for name in ("torch", "torchvision", "streamlit", "plotly", "captum", "networkx", "pillow", "pytest"):
        assert re.search(rf"^{name}==", reqs, re.M), name


def requirement_names(text: str) -> list[str]:
    """The package names of requirement lines (options such as ``-e .`` and comments left out)."""
    return [re.match(r"[A-Za-z0-9_.-]+", line).group(0).lower() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith(("#", "-"))]


def test_the_package_is_installable_and_lists_what_requirements_pin():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    assert project["project"]["name"] == "resviz"
    reqs = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^-e \.$", reqs, re.M)  # the README's install command installs this package too
    runtime = requirement_names(reqs.split("# Tests")[0])
    listed = project["project"]["dependencies"] + project["project"]["optional-dependencies"]["cluster"]
    assert requirement_names("\n".join(listed)) == runtime  # one list, pins in one place
    assert not any(re.search(r"[<>=]=", d) for d in project["project"]["dependencies"] if d.startswith("torch"))


def test_import_resviz_works_from_another_folder(tmp_path):
    """The README's notebook example from anywhere: the package is installed, not found through the current folder."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", "import resviz; print(resviz.__file__); print(resviz.build_model)"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.splitlines()[0]).resolve() == ROOT / "resviz" / "__init__.py"


def test_every_page_is_in_the_navigation_and_visited_by_the_browser_test():
    from resviz.lessons import LESSONS, page_texts

    from helpers import PAGES

    files = {p.stem for p in PAGES.glob("*.py")}
    assert files == {"home"} | {lesson.name for lesson in LESSONS}
    assert set(page_texts()) == {"" if f == "home" else f for f in files}


def test_readme_notebook_example_runs_and_prints_what_it_says(capsys):
    code = re.search(r"```python\n(.+?)\n```", (ROOT / "README.md").read_text(), re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    expected = re.search(r"^# (.+)$", code, re.M).group(1)
    assert capsys.readouterr().out.strip() == expected


SERVER_SIDE = ("streamlit", "websockets", "tornado", "playwright")  # what a notebook must not pull in


def imported_after(code: str) -> set[str]:
    """Top-level names of the modules a fresh interpreter has imported after running ``code``."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_import_resviz_leaves_the_server_and_the_tools_alone():
    names = imported_after("import resviz")
    assert not {n for n in names if n.split(".")[0] in SERVER_SIDE or n.startswith("google.protobuf")}
    assert not {n for n in names if n.startswith(("resviz.ui", "resviz.tools", "resviz.bench"))}


def test_no_library_module_imports_streamlit():
    """Every module but the app plumbing (ui), the tools and the benchmarks works without a server."""
    names = imported_after(
        "import importlib, pkgutil, resviz\n"
        "for m in pkgutil.walk_packages(resviz.__path__, 'resviz.'):\n"
        "    if not m.name.startswith(('resviz.ui', 'resviz.tools.', 'resviz.bench.')):\n"
        "        importlib.import_module(m.name)")
    assert "resviz.lessons" in names and "resviz.plots" in names  # the walk reached the sub-packages
    assert not {n for n in names if n.split(".")[0] in SERVER_SIDE}
