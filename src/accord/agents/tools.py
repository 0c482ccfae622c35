"""``@tool``: a Python function an agent's model may call, with a JSON schema made from its signature.

pydantic builds the schema and validates the model's arguments, so a model that sends the wrong types
gets a precise error back as the tool result (and can correct itself) instead of crashing the turn.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from ..model.errors import InvalidInput
from .models.base import ToolSpec


class Tool:
    def __init__(
        self, fn: Callable[..., Any], name: str | None = None, description: str | None = None
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.description = description or inspect.getdoc(fn) or ""
        hints = _parameter_hints(fn)
        fields: dict[str, Any] = {}
        for pname, param in inspect.signature(fn).parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            annotation = hints.get(pname, Any)
            default = param.default if param.default is not inspect.Parameter.empty else ...
            fields[pname] = (annotation, default)
        self._args_model: type[BaseModel] = create_model(
            f"{self.name}_args", __config__=ConfigDict(extra="forbid"), **fields
        )
        self.is_async = inspect.iscoroutinefunction(fn)
        self._spec: ToolSpec | None = None

    @property
    def spec(self) -> ToolSpec:
        """Built once: every model turn sends it, and pydantic's schema generation is not free."""
        spec = self._spec
        if spec is None:
            schema = self._args_model.model_json_schema()
            schema.pop("title", None)
            spec = self._spec = ToolSpec(self.name, self.description, schema)
        return spec

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            parsed = self._args_model.model_validate(arguments or {})
        except ValidationError as exc:
            raise InvalidInput(
                f"bad arguments for tool {self.name!r}: {exc.errors(include_url=False)}"
            ) from exc
        return {k: getattr(parsed, k) for k in type(parsed).model_fields}

    async def invoke(self, arguments: dict[str, Any]) -> Any:
        kwargs = self.validate(arguments)
        result = self.fn(**kwargs)
        if self.is_async:
            result = await result
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool({self.name})"


def _parameter_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """The parameters' types, one at a time and never the return type's.

    Under ``from __future__ import annotations`` every annotation is a string resolved against the
    function's module: a tool returning ``Handoff`` imported inside the function that defines it
    cannot resolve its return annotation, and needs it for nothing (the schema describes arguments).
    A parameter whose type cannot be resolved is taken as ``Any`` rather than failing the tool.
    """
    raw = {k: v for k, v in getattr(fn, "__annotations__", {}).items() if k != "return"}
    target = inspect.unwrap(fn)
    globalns = getattr(target, "__globals__", {})
    hints: dict[str, Any] = {}
    for pname, annotation in raw.items():
        holder = SimpleNamespace(__annotations__={pname: annotation})
        try:
            hints[pname] = get_type_hints(holder, globalns=globalns)[pname]
        except Exception:  # NameError for a type only the enclosing function knew, and the like
            hints[pname] = Any
    return hints


def tool(
    fn: Callable[..., Any] | None = None, *, name: str | None = None, description: str | None = None
) -> Any:
    """Decorate a function (sync or async) to make it a Tool: ``@tool`` or ``@tool(name=…)``."""
    if fn is None:
        return lambda f: Tool(f, name=name, description=description)
    return Tool(fn, name=name, description=description)
