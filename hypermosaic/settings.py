"""What every command's config has in common: strict models, file reading, one-line errors.

Each command's schema (`hypermosaic.build.config`, `hypermosaic.canvas.config`) is a tree of
`Strict` pydantic models: unknown keys are errors, so a typo is never silently ignored. Files are
read by `read_config_file`, overrides from the command line are laid over the mapping with
`set_dotted`, and a validation error becomes one line naming the file and the key
(`validation_message`).
"""

from __future__ import annotations

import functools
import json
import tomllib
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from hypermosaic.errors import InputError

__all__ = ["Strict", "read_config_file", "set_dotted", "validation_message"]


class Strict(BaseModel):
    """A frozen config model that refuses unknown keys, infinities and NaN (``nan`` and
    ``inf`` are valid TOML), and booleans where a number is asked for (``grid = true`` is
    not grid 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if _holds_bool(value) and _numeric_field(cls, info.field_name or ""):
            raise ValueError("a boolean (true or false), not a number")
        return value


@functools.cache
def _numeric_field(model: type[BaseModel], name: str) -> bool:
    """Whether ``model``'s field ``name`` takes numbers but not booleans (worked out once)."""
    field = model.model_fields.get(name)
    return field is not None and _is_numeric(field.annotation)


def _types(annotation: Any) -> set[Any]:
    """Every type an annotation names, through unions, Annotated and containers."""
    found = {get_origin(annotation) or annotation}
    for argument in get_args(annotation):
        found |= _types(argument)
    return found


def _is_numeric(annotation: Any) -> bool:
    """Whether a field takes numbers but not booleans."""
    types = _types(annotation)
    return bool(types & {int, float}) and not types & {bool, Any}


def _holds_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    return isinstance(value, list | tuple) and any(_holds_bool(item) for item in value)


def read_config_file(path: Path, json_kind: str | None = None) -> dict[str, Any]:
    """The mapping in a TOML config file; with ``json_kind`` (``canvas``) the file must be a
    ``.toml`` or a ``.json`` one, read by its suffix.

    Raises `InputError` naming the file when it is missing, unreadable, malformed, of another
    type, or (JSON) not an object.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    if json_kind is not None and path.suffix == ".json":
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{path}: malformed JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise InputError(f"{path}: a JSON config is an object of settings")
        return raw
    if json_kind is not None and path.suffix != ".toml":
        raise InputError(f"{path}: a {json_kind} config is a .toml or a .json file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: malformed TOML: {exc}") from None


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for ``dotted`` = ``a.b.c``, making tables on the way."""
    *parents, last = dotted.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


def validation_message(
    error: ValidationError,
    source: str,
    *,
    docs: str,
    skip: tuple[str, ...] = (),
    brackets: bool = False,
) -> str:
    """One line naming the first bad key of ``error`` and what is wrong with it.

    Location parts in ``skip`` that follow a list index (a tagged union's tag, such as a
    region's kind) are left out; with ``brackets`` list indices are written as JSON paths
    (``seed_reroll_regions[0][4]``). ``docs`` is where the keys are documented.
    """
    first = error.errors()[0]
    parts: list[str] = []
    for part in first["loc"]:
        text = str(part)
        if text.startswith("function-") or (text in skip and parts and parts[-1].isdigit()):
            continue
        parts.append(text)
    if brackets:
        key = "".join(f"[{p}]" if p.isdigit() and i else ("." if i else "") + p
                      for i, p in enumerate(parts))
    else:
        key = ".".join(parts)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "finite_number":
        message = "not a number" if first["input"] != first["input"] else "not a finite number"
    elif first["type"] == "extra_forbidden":
        message = f"unknown key (check the spelling; see {docs})"
    elif first["type"] == "missing":
        message = "missing (required)"
    return f"{source}: {key}: {message}" if key else f"{source}: {message}"
