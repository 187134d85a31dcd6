"""``template.yaml`` as the local stack reads it: YAML with CloudFormation's short forms, ``Globals`` merged into
each function, and intrinsics resolved the way CloudFormation would for a stack deployed with default parameters
(``herald.local.resources`` builds the resources; ``herald.local.event_sources`` and ``poller`` emulate
the function's event sources from it)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml  # type: ignore[import-untyped,unused-ignore]

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from collections.abc import Set as AbstractSet

#: Environment variable naming another template file (default: template.yaml at the repository root).
TEMPLATE_PATH_ENV = "HERALD_TEMPLATE_PATH"

_SUB_VARIABLE = re.compile(r"\$\{([^}]+)\}")


class LocalResourcesError(Exception):
    """Base class of the local resource errors."""


class TemplateResourceNotFoundError(LocalResourcesError):
    """The template lacks a resource (or parameter) the local stack needs."""


class TemplateTranslationError(LocalResourcesError):
    """The template uses a construct the local stack cannot translate into API calls."""


def refuse_unknown(owner: str, names: Iterable[str], known: AbstractSet[str], *, doing: str = "translate") -> None:
    """``TemplateTranslationError`` naming each of ``names`` (``owner``'s properties) not in ``known``: what the local
    stack would otherwise leave out without a word, behaving otherwise than the template says."""
    unknown = set(names) - known
    if unknown:
        raise TemplateTranslationError(f"{owner}: the local stack does not {doing} {', '.join(sorted(unknown))}")


# ---------------------------------------------------------------------------------------------- template


class CloudFormationLoader(yaml.SafeLoader):  # type: ignore[misc,unused-ignore]
    """A safe YAML loader that reads CloudFormation short-form intrinsics as their long form.

    ``!Ref X`` becomes ``{"Ref": "X"}``, ``!GetAtt A.B`` becomes ``{"Fn::GetAtt": ["A", "B"]}``,
    ``!Sub``/``!If``/``!Join``/... become ``{"Fn::Sub": ...}`` and so on. As in CloudFormation, unquoted
    dates stay strings.
    """


def _construct_intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _construct_intrinsic)
CloudFormationLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def default_template_path() -> Path:
    """``$HERALD_TEMPLATE_PATH`` if set, else template.yaml at the repository root."""
    override = os.environ.get(TEMPLATE_PATH_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[4] / "template.yaml"


def load_template(path: Path | None = None) -> dict[str, Any]:
    """Read a SAM/CloudFormation template (default: :func:`default_template_path`)."""
    source = path or default_template_path()
    with source.open(encoding="utf-8") as stream:
        template = yaml.load(stream, Loader=CloudFormationLoader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(template, dict) or not isinstance(template.get("Resources"), dict):
        raise TemplateResourceNotFoundError(f"{source} is not a CloudFormation template (no Resources)")
    return template


def template_resource(template: dict[str, Any], logical_id: str, resource_type: str | None = None) -> dict[str, Any]:
    resource = template["Resources"].get(logical_id)
    if not isinstance(resource, dict):
        raise TemplateResourceNotFoundError(f"template.yaml has no resource {logical_id!r}")
    if resource_type is not None and resource.get("Type") != resource_type:
        raise TemplateResourceNotFoundError(f"{logical_id} is a {resource.get('Type')}, expected {resource_type}")
    return resource


def _merge_globals(global_value: Any, local_value: Any) -> Any:
    """SAM's Globals rule: maps merge, lists concatenate (globals first), anything else is overridden."""
    if isinstance(global_value, dict) and isinstance(local_value, dict):
        merged = dict(global_value)
        for key, value in local_value.items():
            merged[key] = _merge_globals(global_value[key], value) if key in global_value else value
        return merged
    if isinstance(global_value, list) and isinstance(local_value, list):
        return [*global_value, *local_value]
    return local_value


def function_properties(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    """The properties of an ``AWS::Serverless::Function`` with ``Globals.Function`` applied, as SAM does."""
    resource = template_resource(template, logical_id, "AWS::Serverless::Function")
    global_properties = template.get("Globals", {}).get("Function", {})
    merged: dict[str, Any] = _merge_globals(global_properties, resource.get("Properties", {}))
    return merged


# ---------------------------------------------------------------------------------------------- intrinsics


class Resolver:
    """Resolves intrinsics against parameter defaults and the resources created so far."""

    _NO_VALUE = object()

    def __init__(
        self,
        template: dict[str, Any],
        *,
        pseudo: dict[str, str] | None = None,
        account_id: Callable[[], str] | None = None,
    ) -> None:
        self._parameters: dict[str, Any] = template.get("Parameters", {}) or {}
        self._conditions: dict[str, Any] = template.get("Conditions", {}) or {}
        self._pseudo = pseudo or {}
        self._account_id = account_id
        self.refs: dict[str, str] = {}
        self.attributes: dict[tuple[str, str], str] = {}

    def parameter(self, name: str) -> Any:
        spec = self._parameters.get(name)
        if not isinstance(spec, dict) or "Default" not in spec:
            raise TemplateTranslationError(f"parameter {name!r} has no Default to run locally with")
        default = spec["Default"]
        kind = str(spec.get("Type", "String"))
        if kind == "Number":
            number = float(default)
            return int(number) if number.is_integer() else number
        if kind.startswith("List<") or kind == "CommaDelimitedList":
            return [item.strip() for item in str(default).split(",")]
        return default

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return self._NO_VALUE
        if name == "AWS::AccountId" and self._account_id is not None:
            return self._account_id()
        if name in self._pseudo:
            return self._pseudo[name]
        if name in self._parameters:
            return self.parameter(name)
        if name in self.refs:
            return self.refs[name]
        raise TemplateTranslationError(f"cannot resolve !Ref {name} locally")

    def get_att(self, logical_id: str, attribute: str) -> str:
        try:
            return self.attributes[(logical_id, attribute)]
        except KeyError:
            raise TemplateTranslationError(f"cannot resolve !GetAtt {logical_id}.{attribute} locally") from None

    def _sub_variable(self, name: str, variables: dict[str, Any]) -> str:
        if name.startswith("!"):
            return "${" + name[1:] + "}"
        if name in variables:
            return str(self.resolve(variables[name]))
        if "." in name and not name.startswith("AWS::"):
            logical_id, attribute = name.split(".", 1)
            return self.get_att(logical_id, attribute)
        return str(self.ref(name))

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = (self.resolve(item) for item in value)
            return [item for item in items if item is not self._NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key in ("Ref", "Condition") or key.startswith("Fn::"):
                return self._intrinsic(key, argument)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not self._NO_VALUE}

    def _intrinsic(self, key: str, argument: Any) -> Any:
        if key == "Ref":
            return self.ref(str(argument))
        if key == "Fn::GetAtt":
            logical_id, attribute = argument if isinstance(argument, list) else str(argument).split(".", 1)
            return self.get_att(str(logical_id), str(attribute))
        if key == "Fn::Sub":
            text, variables = (argument, {}) if isinstance(argument, str) else argument
            return _SUB_VARIABLE.sub(lambda match: self._sub_variable(match.group(1), variables), text)
        if key == "Fn::Join":
            delimiter, items = argument
            return str(delimiter).join(str(item) for item in self.resolve(items))
        if key == "Fn::If":
            name, when_true, when_false = argument
            return self.resolve(when_true if self.condition(str(name)) else when_false)
        if key in _CONDITION_FUNCTIONS:
            return self._evaluate({key: argument})
        raise TemplateTranslationError(f"{key} is not supported by the local stack")

    def condition(self, name: str) -> bool:
        """A named condition of the template, evaluated with the parameters' defaults."""
        if name not in self._conditions:
            raise TemplateTranslationError(f"condition {name!r} is not defined")
        return self._evaluate(self._conditions[name])

    def _evaluate(self, expression: Any) -> bool:
        if not isinstance(expression, dict) or len(expression) != 1:
            raise TemplateTranslationError(f"not a condition: {expression!r}")
        ((key, argument),) = expression.items()
        if key == "Condition":
            return self.condition(str(argument))
        if key == "Fn::Equals":
            left, right = (self.resolve(item) for item in argument)
            return str(left) == str(right)
        if key == "Fn::Not":
            return not self._evaluate(argument[0])
        if key == "Fn::And":
            return all(self._evaluate(item) for item in argument)
        if key == "Fn::Or":
            return any(self._evaluate(item) for item in argument)
        raise TemplateTranslationError(f"{key} is not a condition function")


_CONDITION_FUNCTIONS = frozenset({"Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or"})


def references(value: Any) -> Iterator[str]:
    """Logical ids (of resources or parameters) a value refers to."""
    if isinstance(value, list):
        for item in value:
            yield from references(item)
    elif isinstance(value, dict):
        for key, argument in value.items():
            if key == "Ref":
                yield str(argument)
            elif key == "Fn::GetAtt":
                yield str(argument[0] if isinstance(argument, list) else str(argument).split(".", 1)[0])
            elif key == "Fn::Sub":
                text = argument if isinstance(argument, str) else argument[0]
                for match in _SUB_VARIABLE.finditer(text):
                    yield match.group(1).split(".", 1)[0]
                if isinstance(argument, list):
                    yield from references(argument[1:])
            else:
                yield from references(argument)
