"""Which AWS calls a Lambda handler's code can make, read from the source: the IAM actions its role needs.

The walk starts at the handler module, follows its ``herald`` imports (not those under ``TYPE_CHECKING``)
through the whole package, wherever a module lives, and collects the functions reachable from the handler:
module and class bodies run at import, decorated functions are registered (routes, validators, handlers),
and a function reaches every function, method or class it names. A method named through ``self``/``cls``
is looked up in its own class first. A name that is also a method of a built-in type (``get``, ``update``,
``remove``...) is followed by what the receiver may be, since ``x.get(...)`` is most often a dict's: a package
module's function through the module (``subscriptions.update(...)``), and a method of the package's classes
that the receiver's name is ever bound to anywhere in the walked code (annotated, assigned, iterated, returned:
``store.jobs.update(...)`` through ``jobs: JobRepository``), with their bases and subclasses. Names are matched,
not types, so the result may include more than a run makes, never less: every boto3 operation named in
reachable code (``client.put_item(...)`` or ``"put_item"`` passed to a wrapper) and every transaction item kind
(``{"ConditionCheck": ...}``) counts.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import botocore.session
from botocore import xform_name

import herald

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

PACKAGE = "herald"
PACKAGE_ROOT = Path(herald.__file__).resolve().parents[1]
#: The services whose clients Herald's functions use.
SERVICES = ("dynamodb", "sqs", "secretsmanager")
#: TransactWriteItems has no IAM action of its own: each item is authorised as the single-item write it is.
TRANSACTION_ITEMS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}
#: Calls authorised by other actions (SQS batch calls by their single-message action; DynamoDB transactions
#: per item, see TRANSACTION_ITEMS; a PartiQL batch per statement: Herald's are INSERTs only, as
#: ``Table.insert_all``, the one caller, writes them).
AUTHORISED_BY: dict[str, frozenset[str]] = {
    "dynamodb:TransactWriteItems": frozenset(),
    "dynamodb:BatchExecuteStatement": frozenset({"dynamodb:PartiQLInsert"}),
    "dynamodb:TransactGetItems": frozenset({"dynamodb:GetItem"}),
    "sqs:SendMessageBatch": frozenset({"sqs:SendMessage"}),
    "sqs:DeleteMessageBatch": frozenset({"sqs:DeleteMessage"}),
    "sqs:ChangeMessageVisibilityBatch": frozenset({"sqs:ChangeMessageVisibility"}),
}
#: Decorators that do not register a function anywhere (the function is reached when it is named).
PLAIN_DECORATORS = frozenset(
    {"property", "staticmethod", "classmethod", "cache", "lru_cache", "cached_property", "setter", "override"}
)
#: Method names of built-in types: ``x.<name>`` is followed only to what ``x`` may be (``_Walker._receivers``).
BUILTIN_METHODS = frozenset(
    name
    for kind in (dict, list, set, frozenset, str, bytes, tuple, int, float)
    for name in dir(kind)
    if not name.startswith("__")
)


@cache
def operation_index() -> dict[str, str]:
    """boto3 method name -> IAM action (``put_item`` -> ``dynamodb:PutItem``) for SERVICES, from botocore's
    service models. A method name two of the services share is left out (it would be ambiguous)."""
    session = botocore.session.get_session()
    seen: dict[str, set[str]] = {}
    for service in SERVICES:
        model = session.get_service_model(service)
        prefix = model.signing_name or service
        for operation in model.operation_names:
            seen.setdefault(xform_name(operation), set()).add(f"{prefix}:{operation}")
    return {method: next(iter(actions)) for method, actions in seen.items() if len(actions) == 1}


def iam_actions(calls: Iterable[str]) -> set[str]:
    """The IAM actions that authorise ``calls`` (as ``operation_index`` and TRANSACTION_ITEMS name them)."""
    actions: set[str] = set()
    for call in calls:
        actions |= AUTHORISED_BY.get(call, frozenset({call}))
    return actions


# ---------------------------------------------------------------------------------------------- modules


def module_file(name: str) -> Path | None:
    """The source of module ``name`` of the package (a package's ``__init__``), or None."""
    base = PACKAGE_ROOT.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _executed(node: ast.AST) -> Iterator[ast.AST]:
    """Every node below ``node``, without the bodies of ``if TYPE_CHECKING:`` blocks."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for statement in child.orelse:
                yield statement
                yield from _executed(statement)
            continue
        yield child
        yield from _executed(child)


def _imported_modules(tree: ast.Module, name: str, is_package: bool) -> set[str]:
    found: set[str] = set()
    for node in _executed(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                anchor = parts if is_package else parts[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Call):
            found |= _imported_by_name(node)
    modules: set[str] = set()
    for module in found:
        parts = module.split(".")
        if parts[0] == PACKAGE:
            modules |= {".".join(parts[:end]) for end in range(1, len(parts) + 1)}
    return {module for module in modules if module_file(module) is not None}


def _imported_by_name(call: ast.Call) -> set[str]:
    """The modules ``importlib.import_module(name)`` may import: ``name`` if it is a constant, every module of
    package ``p`` if it is ``f"p.{...}"`` (routers imported on demand, ``herald.api.routers``)."""
    function = call.func
    named = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
    if named != "import_module" or not call.args:
        return set()
    name = call.args[0]
    if isinstance(name, ast.Constant) and isinstance(name.value, str):
        return {name.value}
    if isinstance(name, ast.JoinedStr) and name.values:
        head = name.values[0]
        if isinstance(head, ast.Constant) and isinstance(head.value, str) and head.value.endswith("."):
            package = head.value.removesuffix(".")
            source = module_file(package)
            if source is not None and source.name == "__init__.py":
                modules = {path.stem for path in source.parent.glob("*.py")} - {"__init__"}
                return {package} | {f"{package}.{module}" for module in modules}
    return set()


def import_graph(entry: Path) -> dict[str, ast.Module]:
    """The entry module and every package module it imports, directly or not, parsed."""
    trees: dict[str, ast.Module] = {}
    pending: list[tuple[str, Path]] = [("__entry__", entry)]
    while pending:
        name, path = pending.pop()
        if name in trees:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        trees[name] = tree
        for module in _imported_modules(tree, name, path.name == "__init__.py"):
            source = module_file(module)
            if module not in trees and source is not None:
                pending.append((module, source))
    return trees


# ---------------------------------------------------------------------------------------------- reachability


@dataclass
class _Function:
    module: str
    owner: str | None  # the enclosing class
    node: ast.FunctionDef | ast.AsyncFunctionDef


@dataclass
class Reach:
    """What the walk found: the reachable functions (``module:qualname``) and the AWS calls they make."""

    functions: set[str] = field(default_factory=set)
    calls: set[str] = field(default_factory=set)
    #: call -> the first reachable function found making it (for messages)
    where: dict[str, str] = field(default_factory=dict)

    @property
    def actions(self) -> set[str]:
        return iam_actions(self.calls)


def _base_name(base: ast.expr) -> str:
    target = base.value if isinstance(base, ast.Subscript) else base
    return target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")


def _registers(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name not in PLAIN_DECORATORS:
            return True
    return False


def _bound_names(target: ast.expr) -> Iterator[str]:
    """The names an assignment to ``target`` binds: ``x``, ``self.x`` (as ``x``), each of ``x, y``."""
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, ast.Attribute):
        yield target.attr
    elif isinstance(target, ast.Tuple | ast.List):
        for element in target.elts:
            yield from _bound_names(element)
    elif isinstance(target, ast.Starred):
        yield from _bound_names(target.value)


def _sources(value: ast.expr) -> set[str]:
    """The names whose values (or, for a call, whose results) ``value`` may be: ``x``, ``a.x`` and ``f(...)``
    give ``x``/``f``; an element of ``x`` (``x[0]``, ``await x``) is taken to be what ``x`` is bound to."""
    if isinstance(value, ast.Name):
        return {value.id}
    if isinstance(value, ast.Attribute):
        return {value.attr}
    if isinstance(value, ast.Call):
        return _sources(value.func)
    if isinstance(value, ast.Subscript | ast.Await | ast.Starred):
        return _sources(value.value)
    if isinstance(value, ast.IfExp):
        return _sources(value.body) | _sources(value.orelse)
    if isinstance(value, ast.BoolOp):
        return {name for item in value.values for name in _sources(item)}
    if isinstance(value, ast.NamedExpr):
        return _sources(value.value)
    return set()  # a literal, a comprehension, an operation: a built-in value


class _Walker:
    def __init__(self, trees: dict[str, ast.Module]) -> None:
        self.functions: dict[str, list[_Function]] = {}
        self.classes: dict[str, list[tuple[str, ast.ClassDef]]] = {}
        self.reach = Reach()
        self._done: set[int] = set()
        self._pending: list[_Function] = []
        for module, tree in trees.items():
            self._index(module, tree, owner=None)
        #: module -> the names it binds to package modules (``from herald.domain import subscriptions``)
        self.modules = {module: self._module_names(module, tree) for module, tree in trees.items()}
        #: name -> the package classes a value bound to that name may be an instance (or the class) of
        self.kinds = self._kinds(trees)
        #: class -> its bases of the package
        self.bases = {
            name: {_base_name(base) for _, cls in found for base in cls.bases} & self.classes.keys()
            for name, found in self.classes.items()
        }

    def _module_names(self, module: str, tree: ast.Module) -> dict[str, str]:
        names: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and alias.name.startswith(f"{PACKAGE}.") and module_file(alias.name):
                        names[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    name = f"{node.module}.{alias.name}"
                    if name.startswith(f"{PACKAGE}.") and module_file(name) is not None:
                        names[alias.asname or alias.name] = name
        return names

    def _classes_in(self, annotation: ast.expr | None) -> set[str]:
        """The package classes an annotation names, inside ``X | None``, ``list[X]`` or ``"X"`` too."""
        found: set[str] = set()
        for node in ast.walk(annotation) if annotation is not None else ():
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                try:
                    found |= self._classes_in(ast.parse(node.value, mode="eval").body)
                except SyntaxError:
                    continue
            name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
            if name in self.classes:
                found.add(name)
        return found

    def _kinds(self, trees: dict[str, ast.Module]) -> dict[str, set[str]]:
        """Where a name is bound in any walked module (a parameter or attribute annotated, a variable assigned
        or iterated, a function's return annotated), which package classes its value may be: flow- and scope-
        insensitive, so a name holds every class it is ever bound to."""
        kinds: dict[str, set[str]] = {}
        flows: dict[str, set[str]] = {}  # name -> the names whose values it may be bound to

        def bind(names: Iterable[str], value: ast.expr | None = None, annotation: ast.expr | None = None) -> None:
            for name in names:
                kinds.setdefault(name, set()).update(self._classes_in(annotation))
                if value is not None:
                    flows.setdefault(name, set()).update(_sources(value))

        for tree in trees.values():
            for node in ast.walk(tree):
                if isinstance(node, ast.arg):
                    bind([node.arg], annotation=node.annotation)
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    bind([node.name], annotation=node.returns)
                elif isinstance(node, ast.AnnAssign):
                    bind(_bound_names(node.target), node.value, node.annotation)
                elif isinstance(node, ast.Assign):
                    for target in node.targets:
                        bind(_bound_names(target), node.value)
                elif isinstance(node, ast.NamedExpr):
                    bind(_bound_names(node.target), node.value)
                elif isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
                    bind(_bound_names(node.target), node.iter)
                elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                    bind(_bound_names(node.optional_vars), node.context_expr)
        for name in self.classes:  # ``Store(...)``, ``Store.jobs``: the class itself
            kinds.setdefault(name, set()).add(name)
        changed = True
        while changed:
            changed = False
            for name, sources in flows.items():
                found = set().union(*(kinds.get(source, set()) for source in sources))
                if not found <= kinds.setdefault(name, set()):
                    kinds[name] |= found
                    changed = True
        return kinds

    def _related(self, classes: set[str]) -> set[str]:
        """``classes`` with their package bases (a method they inherit) and subclasses (one they override)."""
        up, down = set(classes), set(classes)
        while True:
            more_up = {base for name in up for base in self.bases[name]} - up
            more_down = {name for name, theirs in self.bases.items() if theirs & down} - down
            if not more_up and not more_down:
                return up | down
            up, down = up | more_up, down | more_down

    def _receivers(self, node: ast.Attribute, module: str, owner: str | None) -> list[_Function]:
        """The package functions ``node`` (``x.<name>``, the name a built-in type's method too) may be: a
        function of the package module ``x`` names, or a method of a class ``x`` may be an instance of."""
        receiver = node.value
        if isinstance(receiver, ast.Name) and receiver.id in self.modules.get(module, {}):
            target = self.modules[module][receiver.id]
            return [f for f in self.functions.get(node.attr, []) if f.module == target and f.owner is None]
        if isinstance(receiver, ast.Name) and receiver.id in ("self", "cls") and owner is not None:
            classes = {owner}
        else:
            classes = set().union(*(self.kinds.get(name, set()) for name in _sources(receiver)))
        related = self._related(classes)
        return [f for f in self.functions.get(node.attr, []) if f.owner in related]

    def _index(self, module: str, node: ast.AST, owner: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                self.functions.setdefault(child.name, []).append(_Function(module, owner, child))
            elif isinstance(child, ast.ClassDef):
                self.classes.setdefault(child.name, []).append((module, child))
                self._index(module, child, owner=child.name)
            else:
                self._index(module, child, owner)

    def run(self, trees: dict[str, ast.Module], handler: str) -> Reach:
        for module, tree in trees.items():
            self._visit(tree, module, owner=None, skip_defs=True)
        for candidates in self.functions.values():
            self._pending += [function for function in candidates if _registers(function.node)]
        self._pending += [f for f in self.functions.get(handler, []) if f.module == "__entry__" and f.owner is None]
        while self._pending:
            function = self._pending.pop()
            if id(function.node) in self._done:
                continue
            self._done.add(id(function.node))
            qualname = ".".join(part for part in (function.owner, function.node.name) if part)
            self.reach.functions.add(f"{function.module}:{qualname}")
            self._visit(function.node, function.module, function.owner, skip_defs=False)
        return self.reach

    def _visit(self, root: ast.AST, module: str, owner: str | None, *, skip_defs: bool) -> None:
        """Record the calls made in ``root`` and queue the functions it names. With ``skip_defs`` (a module
        body), function bodies are left out: they run when reached, their decorators and defaults now. In a
        function, nested functions (closures, callbacks) count as part of it."""
        nodes: list[ast.AST] = [root]
        where = f"{module}:{getattr(root, 'name', '<module>')}"
        while nodes:
            node = nodes.pop()
            if skip_defs and node is not root and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                nodes += node.decorator_list + [d for d in (*node.args.defaults, *node.args.kw_defaults) if d]
                continue
            if isinstance(node, ast.If) and _is_type_checking(node):
                nodes += node.orelse
                continue
            self._note(node, module, owner, where)
            nodes += ast.iter_child_nodes(node)

    def _note(self, node: ast.AST, module: str, owner: str | None, where: str) -> None:
        operations = operation_index()
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            call = operations.get(node.value) or TRANSACTION_ITEMS.get(node.value)
            if call:
                self._record(call, where)
        elif isinstance(node, ast.Name):
            self._follow_name(node.id)
        elif isinstance(node, ast.Attribute):
            # ``self.client.send_message``: a boto3 call. A method of the same name on something else (pydantic's
            # ``SecretStr.get_secret_value``, the store's ``Table.query``) is not one; what such a method calls
            # is followed below like any other function.
            if node.attr in operations and "client" in ast.unparse(node.value).lower():
                self._record(operations[node.attr], where)
            receiver = node.value.id if isinstance(node.value, ast.Name) else None
            if receiver in ("self", "cls") and owner is not None:
                own = [f for f in self.functions.get(node.attr, []) if f.owner == owner]
                if own:
                    self._pending += own
                    return
            if node.attr not in BUILTIN_METHODS:
                self._pending += self.functions.get(node.attr, [])
            else:
                self._pending += self._receivers(node, module, owner)

    def _follow_name(self, name: str) -> None:
        """A function named is reached; a class named is built: its dunder methods are reached, and all its
        methods when it extends a class from outside the package (the library calls its overrides)."""
        self._pending += [function for function in self.functions.get(name, []) if function.owner is None]
        for _, cls in self.classes.get(name, []):
            external = any(_base_name(base) not in self.classes for base in cls.bases)
            for candidates in self.functions.values():
                self._pending += [
                    function
                    for function in candidates
                    if function.owner == cls.name and (external or function.node.name.startswith("__"))
                ]

    def _record(self, call: str, where: str) -> None:
        self.reach.calls.add(call)
        self.reach.where.setdefault(call, where)


def reachable_calls(entry: Path, handler: str = "handler") -> Reach:
    """The AWS calls the code reachable from function ``handler`` of module ``entry`` (the Lambda runtime
    calls it) and from the modules it imports can make."""
    trees = import_graph(entry)
    return _Walker(trees).run(trees, handler)
