"""Schedule families by name, for the CLI and ``optimize_schedule(family=...)``."""

from __future__ import annotations

from .._errors import InvalidArgumentError
from ._family import Family
from .cosine import Cosine
from .free import FreeForm
from .wsd import WSD

__all__ = ["FAMILIES", "get_family"]

FAMILIES: dict[str, type[Family]] = {"wsd": WSD, "cosine": Cosine, "free": FreeForm}


def get_family(family: str | Family) -> Family:
    """A family instance from its name (``wsd``, ``cosine``, ``free``) or itself."""
    if isinstance(family, Family):
        return family
    if isinstance(family, str) and family in FAMILIES:
        return FAMILIES[family]()
    raise InvalidArgumentError(
        f"family={family!r} is not known; choose one of {', '.join(FAMILIES)} (or pass a "
        "lossrate.optimize.Family instance)."
    )
