"""``@workflow``: declare an ``async def (ctx, input) -> output`` as a durable workflow."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from durable.core._limits import check_key
from durable.core.codec import Codec, codec_for, parameter_annotations, return_codec
from durable.core.errors import WorkflowNotRegistered

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from durable.core.context import WorkflowCtx

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741

_NO_INPUT = codec_for(type(None))


@dataclass(frozen=True, slots=True, eq=False)
class WorkflowDef(Generic[I, O]):
    """A registered workflow: its name, version, function and payload codecs."""

    name: str
    version: str
    fn: Callable[..., Awaitable[O]]
    input_codec: Codec[I]
    output_codec: Codec[O]
    takes_input: bool

    async def __call__(self, ctx: WorkflowCtx, arg: I) -> O:
        """Run the body (the engine does this; calling it directly bypasses durability)."""
        if self.takes_input:
            return await self.fn(ctx, arg)
        return await self.fn(ctx)


class _WorkflowDecorator:
    def __init__(self, decorate: Callable[[Callable[..., Awaitable[Any]]], WorkflowDef[Any, Any]]):
        self._decorate = decorate

    @overload
    def __call__(self, fn: Callable[[WorkflowCtx], Awaitable[O]], /) -> WorkflowDef[None, O]: ...
    @overload
    def __call__(self, fn: Callable[[WorkflowCtx, I], Awaitable[O]], /) -> WorkflowDef[I, O]: ...
    def __call__(self, fn: Callable[..., Awaitable[Any]], /) -> WorkflowDef[Any, Any]:
        return self._decorate(fn)


@overload
def workflow(fn: Callable[[WorkflowCtx], Awaitable[O]], /) -> WorkflowDef[None, O]: ...
@overload
def workflow(fn: Callable[[WorkflowCtx, I], Awaitable[O]], /) -> WorkflowDef[I, O]: ...
@overload
def workflow(*, name: str | None = None, version: str = "1") -> _WorkflowDecorator: ...
def workflow(
    fn: Callable[..., Awaitable[Any]] | None = None,
    /,
    *,
    name: str | None = None,
    version: str = "1",
) -> Any:
    """Declare a durable workflow: ``@workflow`` or ``@workflow(name=..., version=...)``.

    The input and output types come from the annotations of the function's second parameter
    and its return; they are validated and serialized with pydantic (models, dataclasses and
    plain JSON types). A workflow that takes only ``ctx`` takes no input.

    Args:
        fn: The function, when used bare as ``@workflow``.
        name: The workflow's name (default: the function's name).
        version: Its version; runs resume on the version they started on.
    """

    def decorate(f: Callable[..., Awaitable[Any]]) -> WorkflowDef[Any, Any]:
        if not inspect.iscoroutinefunction(f):
            raise TypeError(f"@workflow needs an async def, got {f!r}")
        check_key(name or f.__name__, "workflow name")
        check_key(str(version), "workflow version")
        params = parameter_annotations(f)
        if not 1 <= len(params) <= 2:
            raise TypeError(f"a workflow takes (ctx) or (ctx, input); {f.__qualname__} does not")
        return WorkflowDef(
            name=name or f.__name__,
            version=str(version),
            fn=f,
            input_codec=codec_for(params[1]) if len(params) == 2 else _NO_INPUT,
            output_codec=return_codec(f),
            takes_input=len(params) == 2,
        )

    return decorate(fn) if fn is not None else _WorkflowDecorator(decorate)


class WorkflowRegistry:
    """The workflows an engine knows, by name and version."""

    def __init__(self, workflows: Iterable[WorkflowDef[Any, Any]]) -> None:
        self._by_name: dict[str, dict[str, WorkflowDef[Any, Any]]] = {}
        for wf in workflows:
            versions = self._by_name.setdefault(wf.name, {})
            if wf.version in versions and versions[wf.version] is not wf:
                raise ValueError(f"workflow {wf.name!r} version {wf.version!r} registered twice")
            versions[wf.version] = wf

    def versions(self) -> frozenset[tuple[str, str]]:
        """Every registered ``(name, version)`` pair."""
        return frozenset((name, v) for name, versions in self._by_name.items() for v in versions)

    def latest(self, name: str) -> WorkflowDef[Any, Any]:
        """The newest version of a workflow (numeric versions compare as numbers).

        Raises:
            WorkflowNotRegistered: No workflow has that name.
        """
        versions = self._by_name.get(name)
        if not versions:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise WorkflowNotRegistered(f"no workflow named {name!r} (registered: {known})")
        return versions[max(versions, key=_version_key)]

    def get(self, name: str, version: str) -> WorkflowDef[Any, Any]:
        """One exact version of a workflow.

        Raises:
            WorkflowNotRegistered: That name or version is not registered.
        """
        found = self._by_name.get(name, {}).get(version)
        if found is None:
            have = sorted(self._by_name.get(name, {}), key=_version_key)
            raise WorkflowNotRegistered(
                f"workflow {name!r} version {version!r} is not registered"
                f" (registered versions: {', '.join(have) or 'none'})"
            )
        return found


def _version_key(version: str) -> tuple[int, ...] | tuple[float, str]:
    parts = version.split(".")
    if all(p.isdigit() for p in parts):
        return tuple(int(p) for p in parts)
    return (float("inf"), version)
