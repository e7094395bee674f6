r"""Typed values to JSON and back, through pydantic ``TypeAdapter``\\ s built once per type."""

from __future__ import annotations

import inspect
import typing
from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic, TypeVar

import pydantic
import pydantic_core

from durable.core.errors import InputValidationError, ResultTypeError, SerializationError

if typing.TYPE_CHECKING:
    from collections.abc import Callable

    from durable.core._types import JSONValue

T = TypeVar("T")

_PLAIN = (str, int, float, bool, type(None))


class Codec(Generic[T]):
    """Encodes values of one type to :data:`JSONValue` and decodes them back, validated."""

    __slots__ = ("_adapter", "_passthrough", "annotation")

    def __init__(self, annotation: Any) -> None:
        self.annotation = annotation
        self._passthrough = annotation is Any or annotation is inspect.Parameter.empty
        self._adapter: pydantic.TypeAdapter[T] = pydantic.TypeAdapter(
            Any if self._passthrough else annotation
        )

    def encode(self, value: T, subject: str) -> JSONValue:
        """The JSON form of ``value``.

        Raises:
            SerializationError: The value cannot be represented as JSON; names ``subject``.
        """
        if type(value) in _PLAIN and (self._passthrough or type(value) is self.annotation):
            return value  # type: ignore[return-value]
        try:
            encoded: JSONValue = self._adapter.dump_python(value, mode="json", warnings="error")
        except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
            raise SerializationError(
                f"{subject}: a value of type {type(value).__qualname__} cannot be stored as JSON"
                f" ({exc})"
            ) from exc
        return encoded

    def record(self, value: object, subject: str) -> tuple[JSONValue, T]:
        """Check a returned value against the type, and give what is stored and what replay sees.

        The value is validated against the declared type (so ``-> str`` returning ``None``
        fails now, not on a replay days later), encoded to JSON, and decoded again: the
        second element is exactly what a replay decodes from the stored JSON, so the first
        execution and every replay see the same value (a tuple comes back as a list in both,
        ``{7: ...}`` as ``{"7": ...}``, an untyped ``datetime`` as its ISO text).

        Raises:
            ResultTypeError: The value does not match the declared type.
            SerializationError: The value cannot be stored as JSON, or is a one-shot iterator
                (a generator) that encoding would consume.
        """
        if type(value) in _PLAIN and (self._passthrough or type(value) is self.annotation):
            return value, value  # type: ignore[return-value]
        if isinstance(value, Iterator | AsyncIterator):
            raise SerializationError(
                f"{subject}: a {type(value).__qualname__} can be read only once, so it cannot be"
                " recorded and replayed; return a list instead"
            )
        if not self._passthrough:
            try:
                value = self._adapter.validate_python(value)
            except pydantic.ValidationError as exc:
                raise ResultTypeError(
                    subject,
                    f"returned {type(value).__qualname__}, declared {_type_name(self.annotation)}"
                    f" ({exc.error_count()} error(s): {exc.errors()[0]['msg']})",
                ) from exc
        encoded = self.encode(value, subject)  # type: ignore[arg-type]
        return encoded, self.decode(encoded, subject)

    def decode(self, data: JSONValue, subject: str) -> T:
        """Validate ``data`` into the codec's type.

        Raises:
            InputValidationError: ``data`` does not fit the type; names ``subject``.
        """
        if self._passthrough:
            return data  # type: ignore[return-value]
        try:
            return self._adapter.validate_python(data)
        except pydantic.ValidationError as exc:
            raise InputValidationError(subject, str(exc), exc) from exc

    def validate(self, value: object, subject: str) -> T:
        """Validate a Python value (a model, a dict, ...) into the codec's type."""
        if self._passthrough:
            return value  # type: ignore[return-value]
        try:
            return self._adapter.validate_python(value)
        except pydantic.ValidationError as exc:
            raise InputValidationError(subject, str(exc), exc) from exc


def _type_name(annotation: object) -> str:
    return annotation.__qualname__ if isinstance(annotation, type) else repr(annotation)


_CODECS: dict[object, Codec[Any]] = {}


def codec_for(annotation: object) -> Codec[Any]:
    """The shared codec of a type (built once per process)."""
    try:
        return _CODECS[annotation]
    except KeyError:
        codec = _CODECS[annotation] = Codec(annotation)
        return codec
    except TypeError:  # an unhashable annotation: build it each time
        return Codec(annotation)


ANY_CODEC: Codec[Any] = codec_for(Any)


def return_codec(fn: Callable[..., object]) -> Codec[Any]:
    """The codec of a function's return annotation (``Any`` when it has none)."""
    hints = _hints(fn)
    return codec_for(hints.get("return", Any))


def _hints(fn: Callable[..., object]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except (NameError, TypeError):
        return {}


def parameter_annotations(fn: Callable[..., object]) -> list[Any]:
    """The resolved annotations of a function's positional parameters (``Any`` if missing)."""
    hints = _hints(fn)
    return [
        hints.get(p.name, Any)
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
