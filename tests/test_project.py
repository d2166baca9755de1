"""The project's promises: the README's two commands, CI runs the test one, requirements pinned."""
import re
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


def test_every_page_is_in_the_navigation_and_visited_by_the_browser_test():
    from resviz.lessons import LESSONS, page_texts

    files = {p.stem for p in (ROOT / "pages").glob("*.py")}
    assert files == {"home"} | {lesson.name for lesson in LESSONS}
    assert set(page_texts()) == {"" if f == "home" else f for f in files}


def test_readme_notebook_example_runs_and_prints_what_it_says(capsys):
    code = re.search(r"```python\n(.+?)\n```", (ROOT / "README.md").read_text(), re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    expected = re.search(r"^# (.+)$", code, re.M).group(1)
    assert capsys.readouterr().out.strip() == expected
