"""Which AWS API calls each Lambda's code can make: a small static call graph over app.py and chalicelib/.

Used by the least-privilege test (tests/deploy/test_policies.py) to check every
``.chalice/policy-<function>.json`` against the code, and by ``python -m deploy policies`` to show it.

How it works, and what it does not see:

- One pass indexes every module: imports, functions, classes (bases, methods, properties, annotated
  fields, attributes set in ``__init__``).
- From each Chalice handler, a walk follows every project function or method it calls *or refers to*
  (``run_task("plan", plan.run, event)`` reaches ``plan.run``; ``intent_lookup=ledger.find_intent``
  reaches ``Ledger.find_intent``). Method calls are resolved with light type inference: parameter and
  return annotations, dataclass fields, attributes assigned in ``__init__``, local assignments and
  ``for`` loops over annotated sequences. A call on a Protocol or a base class reaches every project
  class that implements the method.
- A boto3 client is recognised where it is made (``client("iam")``, ``session.client("sts")``,
  ``resource("dynamodb").Table(...)``), in a property that makes one (``Escrow._sm``), in a variable or
  attribute holding one, and in a parameter named like the service (``iam``, ``sfn``). Every attribute
  of it that is an operation of that service's botocore model is an API call (``client("iam").
  list_access_keys`` passed to a helper counts). powertools Parameters providers count as
  ``secretsmanager:GetSecretValue`` / ``ssm:GetParameter``.
- Not seen: calls made through ``getattr``, ``eval`` or untyped values. The local runtime covers those:
  each function's calls are signed by an IAM user with exactly its policy, with authentication on, and
  the test compares the calls it recorded with this analysis.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from botocore.exceptions import UnknownServiceError

ROOT = Path(__file__).resolve().parent.parent

#: Parameters and variables named like a service hold that service's client (``fetch_credential_report(iam)``).
SERVICE_NAMES = {
    "iam": "iam", "sts": "sts", "sns": "sns", "sfn": "stepfunctions", "stepfunctions": "stepfunctions",
    "dynamodb": "dynamodb", "ssm": "ssm", "secretsmanager": "secretsmanager", "kms": "kms",
}
#: Library calls that are AWS calls in disguise.
INDIRECT = {
    "chalicelib.aws.secrets_provider": {"secretsmanager:GetSecretValue"},
    "chalicelib.aws.ssm_provider": {"ssm:GetParameter"},
    "aws_lambda_powertools.utilities.parameters.get_secret": {"secretsmanager:GetSecretValue"},
    "aws_lambda_powertools.utilities.parameters.get_parameter": {"ssm:GetParameter"},
    "aws_lambda_powertools.utilities.parameters.get_parameters": {"ssm:GetParametersByPath"},
}
#: API calls AWS authorizes without any policy.
NO_PERMISSION_NEEDED = frozenset({"sts:GetCallerIdentity"})
#: Actions AWS also checks for a call, beyond its own (the escrow is created with tags).
DEPENDENT_ACTIONS = {"secretsmanager:CreateSecret": {"secretsmanager:TagResource"},
                     # a graduated role is created with its tags (chalicelib/workflow/graduate_ensure_role.py)
                     "iam:CreateRole": {"iam:TagRole"}}


@dataclass
class FunctionInfo:
    qualname: str  # module.func or module.Class.method
    module: str
    node: ast.FunctionDef | ast.AsyncFunctionDef
    cls: str | None = None  # qualified class name for methods
    is_property: bool = False


@dataclass
class ClassInfo:
    qualname: str
    module: str
    node: ast.ClassDef
    bases: list[str] = field(default_factory=list)  # qualified names of project bases (or raw names)
    methods: dict[str, str] = field(default_factory=dict)  # name -> function qualname
    fields: dict[str, ast.expr] = field(default_factory=dict)  # annotated class-level fields
    attrs: dict[str, ast.expr] = field(default_factory=dict)  # self.x = <expr> in __init__
    attr_params: dict[str, ast.expr] = field(default_factory=dict)  # self.x = param -> its annotation
    is_protocol: bool = False


@dataclass
class ModuleInfo:
    name: str
    path: Path
    tree: ast.Module
    imports: dict[str, str] = field(default_factory=dict)  # local name -> qualified name
    defs: dict[str, str] = field(default_factory=dict)  # top-level name -> qualified name


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


class CodeIndex:
    def __init__(self, files: Iterable[Path]) -> None:
        self.modules: dict[str, ModuleInfo] = {}
        self.functions: dict[str, FunctionInfo] = {}
        self.classes: dict[str, ClassInfo] = {}
        for path in files:
            name = _module_name(path)
            tree = ast.parse(path.read_text(), filename=str(path))
            self.modules[name] = ModuleInfo(name, path, tree)
        for module in self.modules.values():
            self._index(module)

    # -- indexing ----------------------------------------------------------------------------------

    def _index(self, module: ModuleInfo) -> None:
        package = module.name if module.path.name == "__init__.py" else module.name.rpartition(".")[0]
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    module.imports[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else alias.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                for alias in node.names:
                    module.imports[alias.asname or alias.name] = f"{base}.{alias.name}"
        for node in module.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qual = f"{module.name}.{node.name}"
                module.defs[node.name] = qual
                self.functions[qual] = FunctionInfo(qual, module.name, node)
            elif isinstance(node, ast.ClassDef):
                self._index_class(module, node)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    if isinstance(target, ast.Name):
                        module.defs.setdefault(target.id, f"{module.name}.{target.id}")

    def _index_class(self, module: ModuleInfo, node: ast.ClassDef) -> None:
        qual = f"{module.name}.{node.name}"
        module.defs[node.name] = qual
        info = ClassInfo(qual, module.name, node)
        for base in node.bases:
            name = _dotted(base.value if isinstance(base, ast.Subscript) else base)
            if name:
                info.bases.append(self._qualify(module, name))
                info.is_protocol |= name.split(".")[-1] == "Protocol"
        for item in node.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                fq = f"{qual}.{item.name}"
                is_property = any(_dotted(d) in ("property", "functools.cached_property", "cached_property")
                                  for d in item.decorator_list)
                self.functions[fq] = FunctionInfo(fq, module.name, item, qual, is_property)
                info.methods[item.name] = fq
                if item.name == "__init__":
                    annotations = {a.arg: a.annotation for a in [*item.args.args, *item.args.kwonlyargs]
                                   if a.annotation is not None}
                    for sub in ast.walk(item):
                        if isinstance(sub, ast.Assign):
                            for target in sub.targets:
                                if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                                        and target.value.id == "self"):
                                    info.attrs[target.attr] = sub.value
                                    if isinstance(sub.value, ast.Name) and sub.value.id in annotations:
                                        info.attr_params[target.attr] = annotations[sub.value.id]
            elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                info.fields[item.target.id] = item.annotation
        self.classes[qual] = info

    def _qualify(self, module: ModuleInfo, dotted: str) -> str:
        head, _, rest = dotted.partition(".")
        if head in module.imports:
            base = module.imports[head]
        elif head in module.defs:
            base = module.defs[head]
        else:
            return dotted
        return f"{base}.{rest}" if rest else base

    # -- resolution --------------------------------------------------------------------------------

    def mro(self, cls: str) -> Iterator[ClassInfo]:
        seen: set[str] = set()
        stack = [cls]
        while stack:
            name = stack.pop(0)
            if name in seen or name not in self.classes:
                continue
            seen.add(name)
            info = self.classes[name]
            yield info
            stack.extend(info.bases)

    def subclasses(self, cls: str) -> list[ClassInfo]:
        return [c for c in self.classes.values() if c.qualname != cls and any(
            b.qualname == cls for b in self.mro(c.qualname))]

    def implementations(self, cls: str, method: str) -> list[str]:
        """Every method body a call ``<instance of cls>.method()`` may run."""
        found: list[str] = []
        for info in self.mro(cls):
            if method in info.methods:
                found.append(info.methods[method])
                break
        declared = self.classes.get(cls)
        if declared is not None and declared.is_protocol:
            found += [c.methods[method] for c in self.classes.values() if method in c.methods and c is not declared]
        for sub in self.subclasses(cls):
            if method in sub.methods:
                found.append(sub.methods[method])
        return found


def _dotted(node: ast.AST | None) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    if isinstance(node, ast.Call):
        return _dotted(node.func)
    return ""


# Types during the walk: ("class", qualname) | ("service", name) | ("iter", type) | ("union", tuple) | None
Type = tuple[Any, ...] | None


class FunctionAnalysis:
    """The AWS calls a function body makes directly, and the project functions it reaches."""

    def __init__(self, index: CodeIndex, function: FunctionInfo) -> None:
        self.index = index
        self.function = function
        self.module = index.modules[function.module]
        self.calls: set[str] = set()  # "service:OperationName" (botocore names)
        self.reaches: set[str] = set()  # function qualnames
        self.env: dict[str, Type] = {}
        node = function.node
        for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
            if arg.arg == "self" and function.cls:
                self.env["self"] = ("class", function.cls)
            elif arg.annotation is not None:
                self.env[arg.arg] = self.annotation_type(arg.annotation)
            elif arg.arg in SERVICE_NAMES:
                self.env[arg.arg] = ("service", SERVICE_NAMES[arg.arg])
            if self.env.get(arg.arg) is None and arg.arg in SERVICE_NAMES:
                self.env[arg.arg] = ("service", SERVICE_NAMES[arg.arg])
        # Two passes: assignments late in the body type names used earlier in loops.
        for _ in range(2):
            for stmt in node.body:
                self.visit(stmt)

    # -- types ---------------------------------------------------------------------------------------

    def annotation_type(self, ann: ast.expr | None, module: ModuleInfo | None = None) -> Type:
        module = module or self.module
        if ann is None:
            return None
        if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
            try:
                ann = ast.parse(ann.value, mode="eval").body
            except SyntaxError:
                return None
        if isinstance(ann, ast.BinOp) and isinstance(ann.op, ast.BitOr):
            parts = [self.annotation_type(side, module) for side in (ann.left, ann.right)]
            return _union(parts)
        if isinstance(ann, ast.Subscript):
            outer = _dotted(ann.value).split(".")[-1]
            inner = ann.slice.elts if isinstance(ann.slice, ast.Tuple) else [ann.slice]
            if outer in ("Optional", "Union"):
                return _union([self.annotation_type(i, module) for i in inner])
            if outer in ("list", "List", "Sequence", "Iterable", "Iterator", "tuple", "set", "frozenset",
                         "Collection"):
                element = self.annotation_type(inner[0], module)
                return ("iter", element) if element else None
            if outer == "type":
                return None
            return None
        name = _dotted(ann)
        if not name:
            return None
        qual = self.index._qualify(module, name)
        if qual in self.index.classes:
            return ("class", qual)
        return None

    def attribute_type(self, owner: Type, attr: str) -> Type:
        if owner is None:
            return None
        if owner[0] == "union":
            return _union([self.attribute_type(t, attr) for t in owner[1]])
        if owner[0] == "service":
            if owner[1] == "dynamodb" and attr == "Table":
                return owner
            return None
        if owner[0] != "class":
            return None
        for info in self.index.mro(owner[1]):
            module = self.index.modules[info.module]
            if attr in info.methods:
                function = self.index.functions[info.methods[attr]]
                if function.is_property:
                    return self.returns(function)
                return None
            if attr in info.fields:
                return self.annotation_type(info.fields[attr], module)
            if attr in info.attr_params:
                return self.annotation_type(info.attr_params[attr], module)
            if attr in info.attrs:
                return FunctionAnalysis.expr_service(self.index, module, info.attrs[attr])
        return None

    def returns(self, function: FunctionInfo) -> Type:
        module = self.index.modules[function.module]
        declared = self.annotation_type(function.node.returns, module)
        if declared is not None:
            return declared
        # Unannotated (or Any) properties that build a client: ``return client("secretsmanager")``.
        services = {FunctionAnalysis.expr_service(self.index, module, n) for n in ast.walk(function.node)
                    if isinstance(n, ast.Call)} - {None}
        return services.pop() if len(services) == 1 else None

    @staticmethod
    def expr_service(index: CodeIndex, module: ModuleInfo, node: ast.expr) -> Type:
        """``client("iam")``, ``x.client("sts")``, ``resource("dynamodb")`` and ``....Table(...)``."""
        if not isinstance(node, ast.Call):
            return None
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in ("client", "resource") and node.args and isinstance(node.args[0], ast.Constant):
            value = node.args[0].value
            if isinstance(value, str):
                return ("service", value)
        if name == "Table" and isinstance(func, ast.Attribute):
            inner = FunctionAnalysis.expr_service(index, module, func.value)
            if inner == ("service", "dynamodb"):
                return inner
        return None

    def expr_type(self, node: ast.expr) -> Type:
        if isinstance(node, ast.Name):
            if node.id in self.env:
                return self.env[node.id]
            qual = self.index._qualify(self.module, node.id)
            if qual in self.index.classes:
                return ("classobj", qual)
            return None
        if isinstance(node, ast.Attribute):
            owner = self.expr_type(node.value)
            if owner is None:
                qual = self.index._qualify(self.module, _dotted(node))
                if qual in self.index.classes:
                    return ("classobj", qual)
                return None
            return self.attribute_type(owner, node.attr)
        if isinstance(node, ast.Call):
            service = self.expr_service(self.index, self.module, node)
            if service is not None:
                return service
            target = self.resolve_callable(node.func)
            for qual in target:
                if qual in self.index.classes:
                    return ("class", qual)
                function = self.index.functions.get(qual)
                if function is not None:
                    return self.returns(function)
            callee = self.expr_type(node.func)
            if callee is not None and callee[0] == "classobj":
                return ("class", callee[1])
            return None
        if isinstance(node, ast.IfExp):
            return _union([self.expr_type(node.body), self.expr_type(node.orelse)])
        if isinstance(node, ast.BoolOp):
            return _union([self.expr_type(v) for v in node.values])
        if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
            element = _union([self.expr_type(e) for e in node.elts])
            return ("iter", element) if element else None
        return None

    def resolve_callable(self, node: ast.expr) -> list[str]:
        """Project functions/classes ``node`` names (as a callee or a reference)."""
        if isinstance(node, ast.Name):
            if node.id in self.env:
                return []
            qual = self.index._qualify(self.module, node.id)
            return [qual] if qual in self.index.functions or qual in self.index.classes else []
        if isinstance(node, ast.Attribute):
            owner = self.expr_type(node.value)
            if owner is not None:
                return self.methods_of(owner, node.attr)
            qual = self.index._qualify(self.module, _dotted(node))
            if qual in self.index.functions or qual in self.index.classes:
                return [qual]
        return []

    def methods_of(self, owner: Type, name: str) -> list[str]:
        if owner is None:
            return []
        if owner[0] == "union":
            return [m for t in owner[1] for m in self.methods_of(t, name)]
        if owner[0] in ("class", "classobj"):
            return self.index.implementations(owner[1], name)
        return []

    # -- walking -----------------------------------------------------------------------------------

    def bind(self, target: ast.expr, value_type: Type) -> None:
        if isinstance(target, ast.Name):
            if value_type is not None or target.id not in self.env:
                self.env[target.id] = value_type
            if self.env.get(target.id) is None and target.id in SERVICE_NAMES:
                self.env[target.id] = ("service", SERVICE_NAMES[target.id])
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self.bind(element, None)

    def visit(self, node: ast.AST) -> None:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if (isinstance(target, (ast.Tuple, ast.List)) and isinstance(node.value, (ast.Tuple, ast.List))
                        and len(target.elts) == len(node.value.elts)):
                    for element, value in zip(target.elts, node.value.elts, strict=True):
                        self.bind(element, self.expr_type(value))
                else:
                    self.bind(target, self.expr_type(node.value))
        elif isinstance(node, ast.AnnAssign):
            self.bind(node.target, self.annotation_type(node.annotation) or
                      (self.expr_type(node.value) if node.value else None))
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
            iterable = self.expr_type(node.iter)
            self.bind(node.target, iterable[1] if iterable and iterable[0] == "iter" else None)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None:
                    self.bind(item.optional_vars, self.expr_type(item.context_expr))
        elif isinstance(node, ast.NamedExpr):
            self.bind(node.target, self.expr_type(node.value))
        if isinstance(node, (ast.Name, ast.Attribute)) and isinstance(getattr(node, "ctx", None), ast.Load):
            self.reference(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(node, ast.comprehension) and child is node.target:
                continue
            self.visit(child)
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            # Generators first bind their targets; visit again so element names are typed.
            for generator in node.generators:
                self.visit(generator)
            for part in ([node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]):
                self.visit(part)

    def reference(self, node: ast.Name | ast.Attribute) -> None:
        for qual in self.resolve_callable(node):
            if qual in self.index.classes:
                for info in self.index.mro(qual):
                    for special in ("__init__", "__post_init__"):
                        if special in info.methods:
                            self.reaches.add(info.methods[special])
            else:
                self.reaches.add(qual)
        if isinstance(node, ast.Attribute):
            owner = self.expr_type(node.value)
            if owner is not None and owner[0] == "service":
                self.calls.add(f"{owner[1]}:{node.attr}")
            elif owner is not None and owner[0] in ("class", "union"):
                for qual in self.methods_of(owner, node.attr):
                    function = self.index.functions.get(qual)
                    if function is not None:
                        self.reaches.add(qual)
        qual = self.index._qualify(self.module, _dotted(node))
        if qual in INDIRECT:
            self.calls.update(INDIRECT[qual])


def _union(parts: list[Type]) -> Type:
    flat: list[tuple[Any, ...]] = []
    for part in parts:
        if part is None:
            continue
        if part[0] == "union":
            flat.extend(part[1])
        elif part not in flat:
            flat.append(part)
    if not flat:
        return None
    return flat[0] if len(flat) == 1 else ("union", tuple(flat))


# -- botocore names → IAM actions -------------------------------------------------------------------


@cache
def _operations(service: str) -> tuple[str, dict[str, str]]:
    """(IAM action prefix, {python_name: OperationName}) for a boto3 service name."""
    import botocore.session
    from botocore import xform_name

    model = botocore.session.get_session().get_service_model(service)
    prefix = model.signing_name or model.endpoint_prefix
    return prefix, {xform_name(op): op for op in model.operation_names}


def to_actions(calls: Iterable[str]) -> set[str]:
    """``iam:list_access_keys`` → ``iam:ListAccessKeys``; attributes that are not operations are dropped.
    Already-formed actions (``secretsmanager:GetSecretValue``) pass through."""
    actions = set()
    for call in calls:
        service, _, name = call.partition(":")
        try:
            prefix, operations = _operations(service)
        except UnknownServiceError:
            continue
        if name in operations:
            actions.add(f"{prefix}:{operations[name]}")
        elif name in operations.values():
            actions.add(f"{prefix}:{name}")
    for action in list(actions):
        actions |= DEPENDENT_ACTIONS.get(action, set())
    return actions - NO_PERMISSION_NEEDED


# -- the entry points -------------------------------------------------------------------------------


def source_files() -> list[Path]:
    """app.py and chalicelib/: everything Chalice packages, and nothing else."""
    return [ROOT / "app.py", *sorted((ROOT / "chalicelib").rglob("*.py"))]


def chalice_handlers() -> dict[str, str]:
    """Chalice function name → qualified name of its handler in app.py (the REST API is ``api_handler``)."""
    from app import app

    handlers = {f.name: f"app.{f.handler_string.split('.')[-1]}" for f in app.pure_lambda_functions}
    for source in app.event_sources:
        handlers[source.name] = f"app.{source.handler_string.split('.')[-1]}"
    for methods in app.routes.values():
        for entry in methods.values():
            handlers.setdefault("api_handler", f"app.{entry.view_name}")
    return handlers


@dataclass
class Reach:
    entry: str
    #: action -> the functions whose bodies make that call
    origins: dict[str, set[str]]
    #: function -> the function that first reached it (for "handler -> ... -> call" messages)
    parents: dict[str, str | None]

    @property
    def actions(self) -> set[str]:
        return set(self.origins)

    def chain(self, function: str) -> list[str]:
        chain: list[str] = []
        cursor: str | None = function
        while cursor is not None:
            chain.append(cursor)
            cursor = self.parents.get(cursor)
        return list(reversed(chain))


@cache
def index() -> CodeIndex:
    return CodeIndex(source_files())


def analyse(entry: str, code: CodeIndex | None = None) -> Reach:
    """Every AWS action reachable from the function ``entry`` (qualified name), and where it is made."""
    code = code or index()
    parents: dict[str, str | None] = {entry: None}
    queue = [entry]
    origins: dict[str, set[str]] = {}
    while queue:
        current = queue.pop(0)
        if current not in code.functions:
            continue
        result = _analysis(code, current)
        for action in to_actions(result.calls):
            origins.setdefault(action, set()).add(current)
        for callee in sorted(result.reaches):
            if callee not in parents:
                parents[callee] = current
                queue.append(callee)
    return Reach(entry, origins, parents)


_analyses: dict[tuple[int, str], FunctionAnalysis] = {}


def _analysis(code: CodeIndex, qual: str) -> FunctionAnalysis:
    key = (id(code), qual)
    if key not in _analyses:
        _analyses[key] = FunctionAnalysis(code, code.functions[qual])
    return _analyses[key]


@cache
def _function_actions() -> dict[str, Reach]:
    return {name: analyse(handler) for name, handler in chalice_handlers().items()}


def function_actions() -> dict[str, Reach]:
    """Chalice function name → the AWS actions its code can call (computed once per process)."""
    return dict(_function_actions())
