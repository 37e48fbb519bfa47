"""The install layout: every package folder ships, and only under the ``sluice`` namespace."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_installed_under_the_sluice_namespace():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = setup["package-dir"]
    assert set(mapping) == {"sluice.client", "sluice.broker", "sluice.protocol"}
    expected = set()
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            expected.add(".".join((name, *relative)))
    assert set(setup["packages"]) == expected
    assert all(package.startswith("sluice.") for package in setup["packages"])


def test_the_console_s_files_are_package_data():
    """The web console's files ship in wheels (checked by hand: ``pip wheel --no-deps .``
    holds sluice/broker/web/static/*); the HTTP tests show an editable install serves them."""
    from fnmatch import fnmatch

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["sluice.broker.web"]
    static = ROOT / "broker" / "web" / "static"
    files = [str(path.relative_to(static.parent)) for path in static.iterdir()]
    assert "static/index.html" in files
    assert all(any(fnmatch(name, pattern) for pattern in patterns) for name in files)
