"""One name -> class registry, shared by the closures, rates, peer laws and curve models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from ._errors import InvalidArgumentError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Classes of one ``base`` type by their ``name`` class attribute.

    Args:
        kind: what an entry is, as an argument name in messages ("closure", "rate", ...).
        base: the base class; :meth:`get` passes an instance of it through unchanged.
        settings: what the keyword arguments of :meth:`get` are called in messages.
    """

    def __init__(self, kind: str, base: type[T], settings: str = "parameters") -> None:
        self.kind = kind
        self.base = base
        self.settings = settings
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: Any) -> Any:
        """Class decorator: make ``cls`` available by ``cls.name``."""
        if not getattr(cls, "name", ""):
            raise TypeError(f"{cls.__name__} needs a non-empty class attribute 'name'.")
        self._classes[cls.name] = cls
        return cls

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._classes)

    def items(self) -> Iterator[tuple[str, type[T]]]:
        return iter(sorted(self._classes.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def get(self, obj: str | T, *, extra_names: str = "", **settings: Any) -> T:
        """An instance from a registered name and settings, or ``obj`` itself when it is an
        instance already (then no settings may be given)."""
        if isinstance(obj, self.base):
            if settings:
                raise InvalidArgumentError(
                    f"{self.settings} {sorted(settings)} given with a {self.kind} instance; set "
                    "them on the instance."
                )
            return obj
        if not isinstance(obj, str) or obj not in self._classes:
            known = extra_names or ", ".join(self.names())
            raise InvalidArgumentError(
                f"{self.kind}={obj!r} is not known; choose one of {known} or pass a "
                f"{self.base.__name__} instance."
            )
        try:
            return self._classes[obj](**settings)
        except TypeError as exc:
            raise InvalidArgumentError(
                f"{self.kind} {obj!r}: bad {self.settings} {settings}: {exc}"
            ) from None
