"""Tool schemas: make Composio's definitions acceptable to every LiteLLM provider, and cache them.

Composio's catalog is global — a tool's schema is the same for every workspace — so schemas are
cached per toolkit for the whole process (and in Redis, when there is one, for the other
instances). Each definition is sanitised once, when its toolkit loads, because providers are
stricter than OpenAI's non-strict mode:

* function names: ``^[A-Za-z][A-Za-z0-9_-]{0,63}$`` (OpenAI: ≤64 chars of that alphabet; Gemini
  and Bedrock: must start with a letter). Four catalog slugs are 65–68 chars; they get a stable
  shortened name and :class:`SanitizedTool` maps it back on execute;
* argument names: ``^[A-Za-z0-9_.-]{1,64}$`` (Anthropic); renamed the same reversible way;
* the parameters must be valid JSON Schema draft 2020-12 (Anthropic): duplicate ``required``
  entries are removed (``GITHUB_UPDATE_A_REPOSITORY_VARIABLE``), as are ``required`` names with
  no property (Gemini), ``examples`` that are not a list, empty ``enum`` lists, unknown ``type``
  names; local ``$ref`` are inlined (they broke Anthropic and Fireworks);
* descriptions are cut to 1,024 characters (some OpenAI-compatible gateways reject longer ones);
* ``strict: null``, which the SDK emits, is left out.

A schema that still fails is dropped with a log line, never sent.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lucy.core.types import JSON, ToolDef
from lucy.errors import IntegrationError, ToolNotFoundError
from lucy.integrations.caching import SingleFlight, cache_errors
from lucy.log import get_logger

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

    from lucy.cache import Cache
    from lucy.integrations.composio_client import ComposioAPI

log = get_logger("lucy.integrations.schemas")

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
PROPERTY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_NAME = 64
MAX_DESCRIPTION = 1024
JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object", "null"})
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_ONE = ("items", "additionalProperties", "not", "contains", "if", "then", "else")
_MAX_REF_DEPTH = 8


class InvalidToolSchema(ValueError):
    """A tool definition that cannot be made acceptable; the message says why."""


@dataclass(frozen=True)
class SanitizedTool:
    """One Composio tool as the model sees it, with the way back to Composio's names."""

    slug: str
    name: str  # what the model calls; equals slug unless the slug is not a valid name
    toolkit: str
    version: str | None
    definition: ToolDef
    arg_names: Mapping[str, str] = field(default_factory=dict)  # model's argument name → Composio's
    repairs: tuple[str, ...] = ()
    deprecated: bool = False
    tags: tuple[str, ...] = ()  # Composio's (readOnlyHint, destructiveHint, important, ...)

    @property
    def description(self) -> str:
        return str(self.definition["function"].get("description", ""))

    @property
    def parameters(self) -> JSON:
        params: JSON = self.definition["function"]["parameters"]
        return params

    def to_composio_arguments(self, arguments: Mapping[str, Any]) -> JSON:
        """The model's arguments with renamed argument names mapped back."""
        return {self.arg_names.get(k, k): v for k, v in arguments.items()}


def _short(text: str, limit: int, alphabet: re.Pattern[str]) -> str:
    clean = alphabet.sub("_", text)
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{clean[: limit - 9]}_{digest}"


def tool_name(slug: str) -> str:
    """The function name sent for ``slug``: the slug itself when every provider accepts it, else a
    stable form of at most 64 characters (prefix of the slug + a hash of the whole slug)."""
    if NAME_RE.match(slug):
        return slug
    name = _short(slug, MAX_NAME, re.compile(r"[^A-Za-z0-9_-]"))
    return name if name[0].isalpha() else "T" + name[1:]


def argument_name(name: str) -> str:
    if PROPERTY_RE.match(name):
        return name
    return _short(name, MAX_NAME, re.compile(r"[^A-Za-z0-9_.-]"))


def _description(raw: Mapping[str, Any], name: str) -> str:
    # Kept verbatim when it fits (token counts elsewhere are computed on the verbatim text).
    text = str(raw.get("description") or raw.get("name") or name).strip()
    if len(text) <= MAX_DESCRIPTION:
        return text
    cut = text[: MAX_DESCRIPTION - 1].rsplit(" ", 1)[0]
    return cut + "…"


# --- schema repair ---------------------------------------------------------------------------


@dataclass
class _Repair:
    root: JSON
    notes: list[str] = field(default_factory=list)

    def note(self, path: str, what: str) -> None:
        self.notes.append(f"{path or '$'}: {what}")


def _resolve_ref(ctx: _Repair, ref: str, depth: int) -> JSON:
    if depth > _MAX_REF_DEPTH:
        raise InvalidToolSchema(f"$ref {ref} nests deeper than {_MAX_REF_DEPTH} (cyclic?)")
    if not ref.startswith("#/"):
        raise InvalidToolSchema(f"$ref {ref} is not local")
    node: Any = ctx.root
    for escaped in ref[2:].split("/"):
        part = escaped.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise InvalidToolSchema(f"$ref {ref} does not resolve")
        node = node[part]
    if not isinstance(node, dict):
        raise InvalidToolSchema(f"$ref {ref} is not a schema")
    return copy.deepcopy(node)


def _repair_node(ctx: _Repair, node: JSON, path: str, depth: int = 0) -> JSON:
    """Repair one schema node in place (and its children); returns the node to keep."""
    while "$ref" in node:
        ref = str(node.pop("$ref"))
        target = _resolve_ref(ctx, ref, depth)
        ctx.note(path, f"inlined $ref {ref}")
        node = {**target, **node}
        depth += 1
    _repair_keywords(ctx, node, path)
    _repair_properties(ctx, node, path, depth)
    for key in _SUBSCHEMA_ONE:
        child = node.get(key)
        if isinstance(child, list) and key == "items":
            node[key] = child[0] if len(child) == 1 else {"anyOf": child}
            ctx.note(path, "tuple-style items turned into a schema")
            child = node[key]
        if isinstance(child, dict):
            node[key] = _repair_node(ctx, child, f"{path}.{key}", depth)
    for key in _SUBSCHEMA_LISTS:
        children = node.get(key)
        if isinstance(children, list):
            node[key] = [
                _repair_node(ctx, c, f"{path}.{key}[{i}]", depth) for i, c in enumerate(children) if isinstance(c, dict)
            ]
    return node


def _repair_keywords(ctx: _Repair, node: JSON, path: str) -> None:
    if "examples" in node and not isinstance(node["examples"], list):
        node["examples"] = [node["examples"]]
        ctx.note(path, "examples wrapped in a list")
    if "enum" in node and (not isinstance(node["enum"], list) or not node["enum"]):
        del node["enum"]
        ctx.note(path, "empty enum removed")
    kind = node.get("type")
    if isinstance(kind, str) and kind not in JSON_TYPES:
        del node["type"]
        ctx.note(path, f"unknown type {kind!r} removed")
    elif isinstance(kind, list):
        kept = [k for k in dict.fromkeys(kind) if k in JSON_TYPES]
        if kept != kind:
            node["type"] = kept if len(kept) > 1 else (kept[0] if kept else "string")
            ctx.note(path, "type list cleaned")
    for key in ("$schema", "$id", "$defs", "definitions"):
        node.pop(key, None)


def _repair_properties(ctx: _Repair, node: JSON, path: str, depth: int) -> None:
    props = node.get("properties")
    if "properties" in node and not isinstance(props, dict):
        del node["properties"]
        ctx.note(path, "properties that were not an object removed")
        props = None
    required = node.get("required")
    names: list[str] = [r for r in required if isinstance(r, str)] if isinstance(required, list) else []
    if isinstance(props, dict):
        for key, child in list(props.items()):
            if not isinstance(child, dict):
                props[key] = {}
                ctx.note(f"{path}.{key}", "non-schema property replaced by {}")
                continue
            if isinstance(child.get("required"), bool):  # old OpenAPI style: required on the property
                if child.pop("required"):
                    names.append(key)
                ctx.note(f"{path}.{key}", "boolean required moved to the parent")
            props[key] = _repair_node(ctx, child, f"{path}.{key}", depth)
    if "required" in node or names:
        kept = list(dict.fromkeys(n for n in names if props is None or n in props))
        if kept != required:
            ctx.note(path, "required list de-duplicated and limited to known properties")
        if kept:
            node["required"] = kept
        else:
            node.pop("required", None)


def _rename_arguments(ctx: _Repair, params: JSON) -> dict[str, str]:
    props: dict[str, Any] = params["properties"]
    renames: dict[str, str] = {}
    for key in list(props):
        new = argument_name(key)
        if new != key:
            renames[new] = key
    if not renames:
        return {}
    back = {old: new for new, old in renames.items()}
    params["properties"] = {back.get(k, k): v for k, v in props.items()}
    if "required" in params:
        params["required"] = [back.get(k, k) for k in params["required"]]
    ctx.note("$", f"renamed {len(renames)} argument(s) longer than 64 chars or with invalid characters")
    return renames


def _nested_bad_keys(node: Any, top: bool = True) -> list[str]:
    """Property names below the top level that no provider-safe name can replace reversibly."""
    if isinstance(node, list):
        return [b for child in node for b in _nested_bad_keys(child, top=False)]
    if not isinstance(node, dict):
        return []
    bad: list[str] = []
    props = node.get("properties")
    if isinstance(props, dict):
        if not top:
            bad += [k for k in props if not PROPERTY_RE.match(k)]
        for child in props.values():
            bad += _nested_bad_keys(child, top=False)
    for key in (*_SUBSCHEMA_ONE, *_SUBSCHEMA_LISTS):
        if key in node:
            bad += _nested_bad_keys(node[key], top=False)
    return bad


@functools.cache
def _meta_validator() -> Validator:
    # Draft 7's metaschema costs ~1 ms a tool against 2020-12's ~4 ms ($dynamicRef), and for what
    # the repair above leaves (no tuple ``items``, no ``$ref``/``$defs``) a schema valid under one
    # is valid under the other; tests check the whole catalog against 2020-12 itself.
    from jsonschema import Draft7Validator

    return Draft7Validator(Draft7Validator.META_SCHEMA)


def _check(params: JSON) -> None:
    from jsonschema.exceptions import best_match

    error = best_match(_meta_validator().iter_errors(params))
    if error is not None:
        raise InvalidToolSchema(f"not valid JSON Schema: {error.message}")


def sanitize_tool(raw: Mapping[str, Any]) -> SanitizedTool:
    """Make one raw Composio tool (the API's shape) acceptable to every provider.

    Raises:
        InvalidToolSchema: the tool cannot be repaired; the message says why.
    """
    slug = raw.get("slug")
    if not isinstance(slug, str) or not slug:
        raise InvalidToolSchema("tool without a slug")
    toolkit_info = raw.get("toolkit")
    toolkit = str(toolkit_info.get("slug", "")) if isinstance(toolkit_info, dict) else ""
    source = raw.get("input_parameters")
    if source is None:
        source = {}
    if not isinstance(source, dict):
        raise InvalidToolSchema(f"{slug}: input_parameters is not an object")
    params: JSON = copy.deepcopy(source)
    ctx = _Repair(root=copy.deepcopy(source))
    params = _repair_node(ctx, params, "")
    if params.get("type", "object") != "object":
        raise InvalidToolSchema(f"{slug}: input_parameters has type {params.get('type')!r}, not object")
    params["type"] = "object"
    params.setdefault("properties", {})
    bad = _nested_bad_keys(params)
    if bad:
        raise InvalidToolSchema(f"{slug}: nested argument names no provider accepts: {bad[:3]}")
    renames = _rename_arguments(ctx, params)
    _check(params)
    name = tool_name(slug)
    if name != slug:
        ctx.note("name", f"{len(slug)}-char slug sent as {name}")
    version = raw.get("version")
    return SanitizedTool(
        slug=slug,
        name=name,
        toolkit=toolkit.lower(),
        version=str(version) if version else None,
        definition={
            "type": "function",
            "function": {"name": name, "description": _description(raw, slug), "parameters": params},
        },
        arg_names=renames,
        repairs=tuple(ctx.notes),
        deprecated=bool(raw.get("is_deprecated")),
        tags=tuple(str(t) for t in raw.get("tags") or () if isinstance(t, str)),
    )


def nullable_as_null(schema: Any) -> Any:
    """A copy of ``schema`` where OpenAPI's ``nullable: true`` also admits ``null``.

    Composio's schemas mark optional fields ``nullable``; JSON Schema ignores the keyword, so a
    model sending ``null`` for one would be rejected by validation but accepted by Composio.
    """
    if isinstance(schema, list):
        return [nullable_as_null(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    node = {k: (v if k in ("enum", "const", "default", "examples") else nullable_as_null(v)) for k, v in schema.items()}
    if node.get("nullable") is True:
        kind = node.get("type")
        if isinstance(kind, str) and kind != "null":
            node["type"] = [kind, "null"]
        elif isinstance(kind, list) and "null" not in kind:
            node["type"] = [*kind, "null"]
        if isinstance(node.get("enum"), list) and None not in node["enum"]:
            node["enum"] = [*node["enum"], None]
    return node


def to_openai_tool(raw: Mapping[str, Any]) -> ToolDef | None:
    """The sanitised OpenAI-format definition of a raw Composio tool, or None if unusable.

    The name may be shortened (see :func:`tool_name`); :class:`ToolSchemaCache` maps it back.
    """
    try:
        return sanitize_tool(raw).definition
    except InvalidToolSchema:
        return None


# --- the process-wide cache ------------------------------------------------------------------


@dataclass(frozen=True)
class ToolkitTools:
    """All usable tools of one toolkit, sanitised, in Composio's order."""

    toolkit: str
    tools: tuple[SanitizedTool, ...]
    raw: tuple[JSON, ...]  # the usable tools in the API's shape (for the selector's index)
    dropped: tuple[str, ...] = ()
    loaded_at: float = 0.0

    @property
    def by_slug(self) -> dict[str, SanitizedTool]:
        return {t.slug: t for t in self.tools}


def build_toolkit(toolkit: str, raw_tools: Iterable[Mapping[str, Any]], *, loaded_at: float = 0.0) -> ToolkitTools:
    """Sanitise a toolkit's raw tools, logging what was repaired and what was dropped."""
    kept: list[SanitizedTool] = []
    raws: list[JSON] = []
    dropped: list[str] = []
    seen: set[str] = set()
    for raw in raw_tools:
        try:
            tool = sanitize_tool(raw)
        except InvalidToolSchema as exc:
            dropped.append(str(raw.get("slug")))
            log.warning("tool_schema_dropped", toolkit=toolkit, reason=str(exc))
            continue
        if tool.slug in seen:
            continue  # a page boundary that moved under us; the first copy wins
        seen.add(tool.slug)
        if tool.repairs:
            log.info("tool_schema_repaired", toolkit=toolkit, tool=tool.slug, repairs=list(tool.repairs))
        kept.append(tool)
        raws.append(dict(raw))
    return ToolkitTools(toolkit, tuple(kept), tuple(raws), tuple(dropped), loaded_at)


class ToolSchemaCache:
    """Sanitised tool schemas per toolkit: process memory, then the shared cache, then Composio.

    Concurrent first loads of one toolkit make one Composio fetch. An entry older than ``ttl`` is
    refreshed on use; if the refresh fails, the old schemas keep serving (and it is logged).
    """

    def __init__(
        self,
        client: ComposioAPI,
        cache: Cache | None = None,
        *,
        ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._cache = cache
        self._ttl = ttl
        self._clock = clock
        self._toolkits: dict[str, ToolkitTools] = {}
        self._names: dict[str, SanitizedTool] = {}  # model name and slug → tool
        self._flight: SingleFlight[ToolkitTools] = SingleFlight()
        self._validators: dict[str, Validator] = {}

    def loaded(self, toolkit: str) -> ToolkitTools | None:
        return self._toolkits.get(toolkit.lower())

    async def toolkit(self, toolkit: str) -> ToolkitTools:
        key = toolkit.lower()
        current = self._toolkits.get(key)
        if current is not None and self._clock() - current.loaded_at < self._ttl:
            return current
        try:
            return await self._flight.run(key, lambda: self._fetch(key))
        except IntegrationError as exc:
            if current is None:
                raise
            log.warning("tool_schemas_stale", toolkit=key, error=str(exc))
            return current

    async def toolkits(self, toolkits: Iterable[str]) -> list[ToolkitTools]:
        """The tools of each toolkit that loads; a toolkit that fails is logged and skipped."""
        names = sorted({t.lower() for t in toolkits})
        results = await asyncio.gather(*(self.toolkit(t) for t in names), return_exceptions=True)
        loaded: list[ToolkitTools] = []
        for name, result in zip(names, results, strict=True):
            if isinstance(result, ToolkitTools):
                loaded.append(result)
            elif isinstance(result, IntegrationError):
                log.warning("tool_schemas_unavailable", toolkit=name, error=str(result))
            elif isinstance(result, BaseException):
                raise result
        return loaded

    async def _fetch(self, key: str) -> ToolkitTools:
        version = self._client.version_for(key) or "latest"
        raw: list[JSON] | None = None
        if self._cache is not None:
            raw = await self._cache_get(key, version)
        if raw is None:
            raw = await self._client.list_tools(toolkit=key)
            if self._cache is not None:
                await self._cache_set(key, version, raw)
        # Sanitising GitHub's 831 tools is ~1 s of CPU: keep it off the event loop.
        tools = await asyncio.to_thread(build_toolkit, key, raw, loaded_at=self._clock())
        self._install(tools)
        log.info("tool_schemas_loaded", toolkit=key, tools=len(tools.tools), dropped=len(tools.dropped))
        return tools

    async def _cache_get(self, key: str, version: str) -> list[JSON] | None:
        assert self._cache is not None
        try:
            value = await self._cache.get("tool-schemas", key, version)
        except cache_errors() as exc:
            log.warning("tool_schema_cache_unavailable", toolkit=key, error=str(exc))
            return None
        return value if isinstance(value, list) else None

    async def _cache_set(self, key: str, version: str, raw: list[JSON]) -> None:
        assert self._cache is not None
        try:
            await self._cache.set("tool-schemas", key, version, value=raw, ttl=self._ttl)
        except cache_errors() as exc:
            log.warning("tool_schema_cache_unavailable", toolkit=key, error=str(exc))

    def _install(self, tools: ToolkitTools) -> None:
        old = self._toolkits.get(tools.toolkit)
        if old is not None:
            for tool in old.tools:
                self._names.pop(tool.name, None)
                self._names.pop(tool.slug, None)
                self._validators.pop(tool.slug, None)
        self._toolkits[tools.toolkit] = tools
        for tool in tools.tools:
            self._names[tool.slug] = tool
            self._names[tool.name] = tool

    def raw_tool(self, slug: str) -> JSON | None:
        """The tool as Composio described it (``tags`` included), if its toolkit is loaded."""
        tool = self._names.get(slug)
        kit = self._toolkits.get(tool.toolkit) if tool is not None else None
        if tool is None or kit is None:
            return None
        return next((raw for t, raw in zip(kit.tools, kit.raw, strict=True) if t.slug == tool.slug), None)

    def find(self, name: str) -> SanitizedTool | None:
        """A loaded tool by the name the model used (or its Composio slug)."""
        return self._names.get(name)

    async def resolve(self, name: str, toolkits: Iterable[str] = ()) -> SanitizedTool | None:
        """Find the tool the model named, loading its toolkit if needed; None if no such tool.

        ``toolkits`` are candidates to try first (a slug starts with its toolkit's name: GITHUB_…);
        failing those, Composio is asked for the slug itself.
        """
        found = self.find(name)
        if found is not None:
            return found
        upper = name.upper()
        for toolkit in sorted({t.lower() for t in toolkits}, key=len, reverse=True):
            if upper.startswith(toolkit.upper() + "_") and self.loaded(toolkit) is None:
                await self.toolkit(toolkit)
                found = self.find(name)
                if found is not None:
                    return found
        if not NAME_RE.match(name):
            return None
        try:
            raw = await self._client.get_tool(name)
        except ToolNotFoundError:
            return None
        toolkit = str((raw.get("toolkit") or {}).get("slug", "")).lower()
        if not toolkit:
            return None
        await self.toolkit(toolkit)
        return self.find(name)

    def validator(self, tool: SanitizedTool) -> Validator:
        """A cached JSON Schema validator of the arguments the model sends for ``tool``."""
        found = self._validators.get(tool.slug)
        if found is None:
            from jsonschema import Draft202012Validator

            found = Draft202012Validator(nullable_as_null(tool.parameters))
            self._validators[tool.slug] = found
        return found
