"""The README's Python examples run as written (with the run folder moved to a temp dir)."""

import re
from pathlib import Path

README = (Path(__file__).parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2


def test_readme_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).parent.parent)
    for block in BLOCKS:
        code = block.replace("runs/example", str(tmp_path / "example"))
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert (tmp_path / "example" / "out" / "grid.png").is_file()
