"""Shared config habits (`hypermosaic.settings`): strict models, files, one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
from pydantic import Field, ValidationError

from hypermosaic.errors import InputError
from hypermosaic.settings import Strict, read_config_file, set_dotted, validation_message


class Inner(Strict):
    kind: str = "a"
    size: Annotated[int, Field(ge=1)] = 1


class Outer(Strict):
    name: str
    items: list[Inner] = []


def _error(raw: dict) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Outer.model_validate(raw)
    return caught.value


def test_one_line_names_the_file_and_the_key() -> None:
    assert validation_message(_error({"name": "x", "colour": 1}), "c.toml", docs="docs/x.md") \
        == "c.toml: colour: unknown key (check the spelling; see docs/x.md)"
    assert validation_message(_error({}), "c.toml", docs="d") == "c.toml: name: missing (required)"
    bad = _error({"name": "x", "items": [{}, {"size": 0}]})
    assert validation_message(bad, "c.json", docs="d", brackets=True) \
        == "c.json: items[1].size: Input should be greater than or equal to 1"
    assert validation_message(bad, "c.toml", docs="d") \
        == "c.toml: items.1.size: Input should be greater than or equal to 1"


def test_dotted_overrides_make_tables() -> None:
    raw: dict = {"a": {"b": 1}}
    set_dotted(raw, "a.c.d", 2)
    set_dotted(raw, "e", 3)
    assert raw == {"a": {"b": 1, "c": {"d": 2}}, "e": 3}


def test_config_files_are_read_or_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "good.toml").write_text("a = 1\n")
    (tmp_path / "bad.toml").write_text("a = [\n")
    (tmp_path / "good.json").write_text('{"a": 1}')
    (tmp_path / "list.json").write_text("[1]")
    (tmp_path / "c.yaml").write_text("a: 1")
    assert read_config_file(tmp_path / "good.toml") == {"a": 1}
    assert read_config_file(tmp_path / "good.json", json_kind="canvas") == {"a": 1}
    cases = [
        (tmp_path / "bad.toml", None, "bad.toml: malformed TOML"),
        (tmp_path / "none.toml", None, "none.toml: no such config file"),
        (tmp_path / "list.json", "canvas", "list.json: a JSON config is an object of settings"),
        (tmp_path / "c.yaml", "canvas", "c.yaml: a canvas config is a .toml or a .json file"),
        (tmp_path, None, ": cannot read"),
    ]
    for path, kind, message in cases:
        with pytest.raises(InputError) as error:
            read_config_file(path, json_kind=kind)
        assert message in str(error.value)
