"""The README's set-up commands are what CI runs; keep their shape."""

import re

from conftest import REPO


def test_readme_opens_with_install_then_main_job_then_tests():
    blocks = re.findall(r"^```bash\n(.*?)\n```$", (REPO / "README.md").read_text(), flags=re.M | re.S)
    install, main_job = blocks[0].splitlines()
    test = blocks[1]
    assert "python3 -m venv" in install and "pip install torch==2.13.0" in install and "pip install -e" in install
    assert install.index("torch==2.13.0") < install.index("pip install -e")  # torch first: no CUDA wheels here
    assert main_job.startswith("budget curve")
    assert test == "pytest"
