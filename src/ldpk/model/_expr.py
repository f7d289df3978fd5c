"""Safe expression compiler: Python syntax parsed with ``ast`` and compiled to jax.numpy.

Nothing in a model file is ever ``eval``ed: the syntax tree is checked against a whitelist of
node types and function names, then turned into nested closures that call jax.numpy.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax.numpy as jnp

from ldpk.errors import ModelError


def _nary(fn: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    def reduce(*args: Any) -> Any:
        out = args[0]
        for a in args[1:]:
            out = fn(out, a)
        return out

    return reduce


def _hill(x: Any, x50: Any, n: Any = 1.0) -> Any:
    """Hill function x^n / (x50^n + x^n), 0 at x <= 0 (dimensionless)."""
    x = jnp.maximum(x, 0.0)
    xn = x**n
    return xn / (x50**n + xn)


#: Functions a model expression may call: name -> (callable, min args, max args, description).
FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int | None, str]] = {
    "exp": (jnp.exp, 1, 1, "e**x"),
    "log": (jnp.log, 1, 1, "natural logarithm"),
    "log10": (jnp.log10, 1, 1, "base-10 logarithm"),
    "sqrt": (jnp.sqrt, 1, 1, "square root"),
    "abs": (jnp.abs, 1, 1, "absolute value"),
    "min": (_nary(jnp.minimum), 2, None, "smallest argument"),
    "max": (_nary(jnp.maximum), 2, None, "largest argument"),
    "where": (jnp.where, 3, 3, "where(condition, if_true, if_false)"),
    "pow": (jnp.power, 2, 2, "pow(x, y) = x**y"),
    "floor": (jnp.floor, 1, 1, "round down"),
    "ceil": (jnp.ceil, 1, 1, "round up"),
    "clip": (jnp.clip, 3, 3, "clip(x, lower, upper)"),
    "hill": (_hill, 2, 3, "hill(x, x50, n=1) = x**n / (x50**n + x**n)"),
    "expit": (lambda x: 1.0 / (1.0 + jnp.exp(-x)), 1, 1, "logistic 1 / (1 + exp(-x))"),
    "logit": (lambda p: jnp.log(p) - jnp.log1p(-p), 1, 1, "log(p / (1 - p))"),
}

#: Named constants available in every expression.
CONSTANTS: dict[str, float] = {"pi": math.pi, "ln2": math.log(2.0)}

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
    ast.Mod: lambda a, b: a % b,
}
_UNARY: dict[type, Callable[[Any], Any]] = {
    ast.USub: lambda a: -a,
    ast.UAdd: lambda a: a,
    ast.Not: jnp.logical_not,
}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
}

_SYMBOLS = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.Mod: "%",
}  # fmt: skip


@dataclass(frozen=True)
class Expr:
    """A compiled expression. Equality and hashing use the source text only.

    Call it with a mapping from names to values (floats or JAX arrays).
    """

    source: str
    names: frozenset[str]
    _fn: Callable[[Mapping[str, Any]], Any] = field(compare=False, repr=False)

    def __call__(self, env: Mapping[str, Any]) -> Any:
        return self._fn(env)

    @property
    def is_constant(self) -> bool:
        return not self.names

    def constant_value(self) -> float:
        """The value of an expression that uses no names."""
        return float(self._fn({}))

    def __reduce__(self) -> tuple[Any, tuple[str, frozenset[str]]]:
        # Pickled as its source (the closures are compiled again), so models travel to
        # other processes (Dask workers).
        return _recompile, (self.source, self.names)


def _recompile(source: str, names: frozenset[str]) -> Expr:
    return compile_expr(source, set(names), "<unpickled expression>")


def _fail(where: str, source: str, node: ast.AST | None, message: str) -> ModelError:
    col = (
        f" (column {node.col_offset + 1})"
        if node is not None and hasattr(node, "col_offset")
        else ""
    )
    return ModelError(f"{where}: cannot use expression {source!r}{col}: {message}")


def compile_expr(
    source: str | float | int, allowed: Mapping[str, str] | set[str], where: str
) -> Expr:
    """Parse ``source`` and compile it to a function of named values.

    Parameters
    ----------
    source:
        Python-syntax expression (or a number).
    allowed:
        The names the expression may use (a mapping name -> kind is used in error messages).
    where:
        Location used in error messages, e.g. ``"model.yaml: flows[2].k"``.
    """
    if isinstance(source, bool):
        raise ModelError(f"{where}: expected a number or an expression, got {source!r}")
    if isinstance(source, int | float):
        value = float(source)
        return Expr(repr(value), frozenset(), lambda env: value)
    if not isinstance(source, str) or not source.strip():
        raise ModelError(f"{where}: expected a number or an expression, got {source!r}")
    text = source.strip()
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ModelError(f"{where}: {text!r} is not a valid expression: {exc.msg}") from None
    used: set[str] = set()
    allowed_set = set(allowed)

    def build(node: ast.AST) -> Callable[[Mapping[str, Any]], Any]:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool):
                v = node.value
                return lambda env: v
            if isinstance(node.value, int | float):
                f = float(node.value)
                return lambda env: f
            raise _fail(where, text, node, f"constant {node.value!r} is not a number")
        if isinstance(node, ast.Name):
            name = node.id
            if name in allowed_set:
                used.add(name)
                return lambda env: env[name]
            if name in CONSTANTS:
                c = CONSTANTS[name]
                return lambda env: c
            if name in FUNCTIONS:
                raise _fail(where, text, node, f"{name!r} is a function: call it, e.g. {name}(x)")
            valid = ", ".join(sorted(allowed_set | set(CONSTANTS))) or "(none)"
            raise _fail(where, text, node, f"unknown name {name!r}; valid names here: {valid}")
        if isinstance(node, ast.BinOp):
            op = _BINOPS.get(type(node.op))
            if op is None:
                raise _fail(where, text, node, f"operator {type(node.op).__name__} is not allowed")
            left, right = build(node.left), build(node.right)
            return lambda env: op(left(env), right(env))
        if isinstance(node, ast.UnaryOp):
            uop = _UNARY.get(type(node.op))
            if uop is None:
                raise _fail(where, text, node, f"operator {type(node.op).__name__} is not allowed")
            operand = build(node.operand)
            return lambda env: uop(operand(env))
        if isinstance(node, ast.Compare):
            ops = []
            for o in node.ops:
                c = _COMPARE.get(type(o))
                if c is None:
                    raise _fail(where, text, node, f"comparison {type(o).__name__} is not allowed")
                ops.append(c)
            parts = [build(node.left)] + [build(c) for c in node.comparators]

            def compare(env: Mapping[str, Any]) -> Any:
                vals = [p(env) for p in parts]
                out = ops[0](vals[0], vals[1])
                for i in range(1, len(ops)):
                    out = jnp.logical_and(out, ops[i](vals[i], vals[i + 1]))
                return out

            return compare
        if isinstance(node, ast.BoolOp):
            fn = jnp.logical_and if isinstance(node.op, ast.And) else jnp.logical_or
            values = [build(v) for v in node.values]
            return lambda env: _nary(fn)(*(v(env) for v in values))
        if isinstance(node, ast.IfExp):
            test, body, orelse = build(node.test), build(node.body), build(node.orelse)
            return lambda env: jnp.where(test(env), body(env), orelse(env))
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise _fail(
                    where, text, node, "only plain function calls such as exp(x) are allowed"
                )
            fname = node.func.id
            if fname not in FUNCTIONS:
                valid = ", ".join(sorted(FUNCTIONS))
                raise _fail(where, text, node, f"function {fname!r} is not allowed; valid: {valid}")
            if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                raise _fail(where, text, node, f"{fname}() takes positional arguments only")
            func, lo, hi, _ = FUNCTIONS[fname]
            n = len(node.args)
            if n < lo or (hi is not None and n > hi):
                want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi else f"at least {lo}"
                raise _fail(where, text, node, f"{fname}() takes {want} arguments, got {n}")
            args = [build(a) for a in node.args]
            return lambda env: func(*(a(env) for a in args))
        kind = type(node).__name__
        hint = {
            "Attribute": "attribute access (a.b) is not allowed",
            "Lambda": "lambda is not allowed",
            "Subscript": "indexing (a[i]) is not allowed",
            "ListComp": "comprehensions are not allowed",
            "GeneratorExp": "comprehensions are not allowed",
            "SetComp": "comprehensions are not allowed",
            "DictComp": "comprehensions are not allowed",
            "NamedExpr": "assignment (:=) is not allowed",
        }.get(kind, f"{kind} is not allowed in a model expression")
        raise _fail(where, text, node, hint)

    fn = build(tree.body)
    return Expr(text, frozenset(used), fn)


def describe_functions() -> str:
    """One line per function a model expression may call."""
    return "\n".join(f"{n}: {d}" for n, (_, _, _, d) in sorted(FUNCTIONS.items()))


class _NotPiecewiseLinear(Exception):
    """Raised inside :func:`piecewise_linear_in` at the first node that breaks the form."""


# Kinds of sub-expression in :func:`piecewise_linear_in`.
_ZERO, _CONST, _LIN, _COND, _TIME = "zero", "const", "linear", "condition", "time"
_ORDER = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)


def _same_expression(node: ast.AST, switch: Expr) -> bool:
    if switch.is_constant:
        return (
            isinstance(node, ast.Constant)
            and isinstance(node.value, int | float)
            and not isinstance(node.value, bool)
            and float(node.value) == switch.constant_value()
        )
    return ast.dump(node) == ast.dump(ast.parse(switch.source, mode="eval").body)


def piecewise_linear_in(expr: Expr, states: set[str], switches: tuple[Expr, ...]) -> bool:
    """Whether ``expr`` is linear and homogeneous in the ``states`` (every term a coefficient
    times one state, no constant term) with coefficients that depend on time ``t`` only
    through order comparisons of ``t`` with one of the ``switches`` (``t < TMAX``,
    ``TMAX <= t``, combined with and/or/not). Between consecutive switch times such an
    expression is then K·x with K constant: the exact kernel can solve it by matrix
    exponentials piece by piece. Decided from the syntax alone (sufficient, not necessary:
    ``exp(log(A))`` or ``x*x/x`` are rejected)."""

    def kind(node: ast.AST) -> str:
        if isinstance(node, ast.Constant):
            return _ZERO if node.value == 0 and not isinstance(node.value, bool) else _CONST
        if isinstance(node, ast.Name):
            return _LIN if node.id in states else _TIME if node.id == "t" else _CONST
        if isinstance(node, ast.UnaryOp):
            k = kind(node.operand)
            if isinstance(node.op, ast.Not):
                return _need(k in (_COND, _CONST, _ZERO), k)
            return _need(k in (_ZERO, _CONST, _LIN), k)
        if isinstance(node, ast.BinOp):
            return _binop(node.op, kind(node.left), kind(node.right))
        if isinstance(node, ast.Compare):
            return _compare(node)
        if isinstance(node, ast.BoolOp):
            ks = [kind(v) for v in node.values]
            _need(all(k in (_COND, _CONST, _ZERO) for k in ks), "")
            return _COND if _COND in ks else _CONST
        if isinstance(node, ast.IfExp):
            return _select(kind(node.test), kind(node.body), kind(node.orelse))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            ks = [kind(a) for a in node.args]
            if node.func.id == "where" and len(ks) == 3:
                return _select(*ks)
            _need(all(k in (_ZERO, _CONST) for k in ks), "")
            return _CONST
        raise _NotPiecewiseLinear

    def _compare(node: ast.Compare) -> str:
        operands = [node.left, *node.comparators]
        ks = [kind(o) for o in operands]
        if all(k in (_ZERO, _CONST) for k in ks):
            return _CONST
        # time against switches only: `t < TMAX`, `TMAX <= t`, `T1 <= t < T2`
        pairs = list(zip(operands, ks, strict=True))
        for op, (a, ka), (b, kb) in zip(node.ops, pairs[:-1], pairs[1:], strict=True):
            if _TIME not in (ka, kb):
                _need(ka in (_ZERO, _CONST) and kb in (_ZERO, _CONST), "")
                continue
            other, k_other = (b, kb) if ka == _TIME else (a, ka)
            _need(isinstance(op, _ORDER) and k_other in (_ZERO, _CONST), "")
            _need(any(_same_expression(other, s) for s in switches), "")
        return _COND

    def _binop(op: ast.operator, a: str, b: str) -> str:
        _need(a not in (_TIME, _COND) and b not in (_TIME, _COND), "")
        if isinstance(op, ast.Add | ast.Sub):
            if a == _ZERO or b == _ZERO:
                return b if a == _ZERO else a
            return _need(a == b, a)
        if isinstance(op, ast.Mult):
            if _ZERO in (a, b):
                return _ZERO
            _need(not (a == _LIN and b == _LIN), "")
            return _LIN if _LIN in (a, b) else _CONST
        if isinstance(op, ast.Div):
            _need(b == _CONST, "")
            return a
        _need(a != _LIN and b != _LIN, "")  # powers, modulo
        return _CONST

    def _select(test: str, a: str, b: str) -> str:
        _need(test in (_COND, _CONST, _ZERO), "")
        _need(a != _TIME and b != _TIME and a != _COND and b != _COND, "")
        if a == b:
            return a
        if _ZERO in (a, b):
            return b if a == _ZERO else a  # 0 is both a constant and a zero linear form
        raise _NotPiecewiseLinear  # a linear form on one side and a constant on the other

    try:
        return kind(ast.parse(expr.source, mode="eval").body) in (_LIN, _ZERO)
    except _NotPiecewiseLinear:
        return False


def _need(ok: bool, result: str) -> str:
    if not ok:
        raise _NotPiecewiseLinear
    return result
