"""Changes given to the facade as a model, a mapping and/or keyword arguments, merged into one
mapping; ``UNSET`` marks a keyword not given."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pydantic import BaseModel

from chathistory.errors import ValidationError


class Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset()


def merged(
    changes: BaseModel | Mapping[str, Any] | None, model: type[BaseModel], **given: Any
) -> dict[str, Any]:
    """A change given as a model, a mapping and/or keyword arguments, as one mapping (a
    keyword wins over the same key of the mapping; an ``UNSET`` keyword is not given)."""
    data: dict[str, Any] = {}
    if isinstance(changes, model):
        data = changes.model_dump(exclude_unset=True)
    elif isinstance(changes, Mapping):
        data = dict(changes)
    elif changes is not None:
        raise ValidationError("must be an object", loc=("body",))
    data.update({name: value for name, value in given.items() if not isinstance(value, Unset)})
    return data
