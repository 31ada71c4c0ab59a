"""The README's two set-up commands are what CI runs; keep their shape."""

import re

from conftest import REPO


def test_readme_opens_with_install_and_test_commands():
    blocks = re.findall(r"^```bash\n(.*?)\n```$", (REPO / "README.md").read_text(), flags=re.M | re.S)
    install, test = blocks[0], blocks[1]
    assert "\n" not in install and "\n" not in test  # .ci/run takes one line from each
    assert "python3 -m venv" in install and "pip install torch==2.13.0" in install and "pip install -e" in install
    assert install.index("torch==2.13.0") < install.index("pip install -e")  # torch first: no CUDA wheels here
    assert test.startswith("pytest")
