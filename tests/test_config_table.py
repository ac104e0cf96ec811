"""The README's configuration table, ``.env.example`` and the settings classes name the
same variables: a setting added to the code without docs (or documented but never read)
fails here."""

from __future__ import annotations

import re

from pydantic_settings import BaseSettings

from agent.settings import WorkerSettings
from services import ServiceSettings
from tests.conftest import REPO

SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (WorkerSettings, ServiceSettings)
ENV_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=", re.MULTILINE)
TABLE_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \|", re.MULTILINE)


def env_example() -> list[str]:
    return ENV_LINE.findall((REPO / ".env.example").read_text(encoding="utf-8"))


def readme_table() -> list[str]:
    """The variables in the first column of the README's "## Configuration" table."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return TABLE_ROW.findall(section)


def settings_aliases() -> list[str]:
    return [field.alias for cls in SETTINGS_CLASSES for field in cls.model_fields.values() if field.alias is not None]


def test_env_example_names_each_variable_once() -> None:
    names = env_example()
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_the_readme_table_names_exactly_the_variables_of_env_example() -> None:
    table = readme_table()
    assert len(table) == len(set(table)), sorted(n for n in table if table.count(n) > 1)
    assert set(table) == set(env_example()), {
        "missing from the README table": sorted(set(env_example()) - set(table)),
        "not in .env.example": sorted(set(table) - set(env_example())),
    }


def test_every_setting_is_in_env_example_and_every_variable_is_read() -> None:
    aliases = set(settings_aliases())
    documented = set(env_example())
    assert aliases - documented == set(), "settings without a line in .env.example"
    assert documented - aliases == set(), ".env.example names variables no settings read"


def test_every_settings_field_has_an_env_alias() -> None:
    """A field without an alias would be read under its Python name, undocumented."""
    unnamed = [
        f"{cls.__name__}.{name}"
        for cls in SETTINGS_CLASSES
        for name, field in cls.model_fields.items()
        if field.alias is None
    ]
    assert unnamed == []
