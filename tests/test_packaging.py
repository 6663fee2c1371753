"""The wheel and sdist that pip users get: licence, URLs, version, and a README that fits them."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import oodscore

ROOT = Path(__file__).resolve().parents[1]
URLS = {"Homepage", "Documentation", "Source", "Issues", "Changelog"}

pytest.importorskip("hatchling")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-d", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return out


def test_wheel_metadata_has_licence_urls_and_version(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = Parser().parsestr(zf.read(meta_name).decode())
        licence = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert licence, "the licence file ships in the wheel"
        assert "BSD 3-Clause" in zf.read(licence[0]).decode()
    assert meta["Version"] == oodscore.__version__
    assert meta["License-Expression"] == "BSD-3-Clause"
    assert meta.get_all("License-File") == ["LICENSE"]
    labels = {url.split(",")[0].strip() for url in meta.get_all("Project-URL") or []}
    assert labels >= URLS
    assert "oodscore/py.typed" in names
    assert "oodscore/commands/demo.py" in names
    assert not [n for n in names if n.startswith(("tests/", "docs/", "benchmarks/", "scripts/"))]


def test_sdist_ships_the_licence(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as tf:
        names = {Path(n).relative_to(Path(n).parts[0]).as_posix() for n in tf.getnames()}
    assert {"LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml"} <= names


def test_readme_speaks_to_pip_users_before_contributors() -> None:
    readme = (ROOT / "README.md").read_text()
    pip_part, _, clone_part = readme.partition("## From a clone")
    assert clone_part, "a section for people working from a clone"
    assert "pip install oodscore" in pip_part
    assert re.search(r"^oodscore demo\b", pip_part, re.M)
    # what the wheel does not have is only named in the contributors' section
    for only_in_clone in ("scripts/", "mkdocs", ".venv"):
        assert only_in_clone not in pip_part, only_in_clone


def test_version_is_the_newest_changelog_release() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", changelog, re.M)
    assert releases, "the CHANGELOG names released versions"
    assert releases[0][0] == oodscore.__version__
    assert f"[{oodscore.__version__}]: " in changelog  # the version's link
