"""Every package directory is in pyproject's explicit list: one missing installs editable but vanishes from the wheel."""

import tomllib

from support import ROOT


def test_every_package_directory_is_listed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = config["package-dir"]
    listed = set(config["packages"])
    found = set()
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *relative.parts]))
    assert found == listed


def test_no_generic_top_level_names_are_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert all(name == "hil" or name.startswith("hil.") for name in config["packages"])


def test_the_sources_hil_compiles_on_demand_travel_with_the_package():
    """The C firmware and the compiled lockstep exchange are built from sources at run time: each
    must match a package-data pattern, or an installed wheel could not build them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    data = [(ROOT / config["package-dir"][package], pattern)
            for package, patterns in config["package-data"].items() for pattern in patterns]
    sources = [*(ROOT / "firmware_stubs" / "c").glob("*.[ch]"), *(ROOT / "bridges").glob("*.cc")]
    assert len(sources) > 10
    for source in sources:
        assert any(source.is_relative_to(folder) and source.relative_to(folder).match(pattern)
                   for folder, pattern in data), source
