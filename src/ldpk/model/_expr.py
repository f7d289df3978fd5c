"""Safe expression compiler: Python syntax parsed with ``ast`` and compiled to jax.numpy.

Nothing in a model file is ever ``eval``ed: the syntax tree is checked against a whitelist of
node types and function names, then turned into nested closures that call jax.numpy.
"""

from __future__ import annotations

import ast
import difflib
import math
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax.numpy as jnp
import numpy as np

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

#: Longest expression accepted, in characters (longer ones are refused before parsing; a
#: longer formula can be split into `derived:` quantities).
MAX_EXPRESSION_LENGTH = 4000
#: Deepest syntax tree accepted (nesting of operators, calls and parentheses). Python's own
#: parser refuses more than 200 nested parentheses; sums of more terms than this are refused too.
MAX_EXPRESSION_DEPTH = 200

_SYMBOLS = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.Mod: "%",
}  # fmt: skip


# ---- lookalike characters --------------------------------------------------------------------
#: Letters of other scripts that look like Latin ones (what a name typed by copying from a paper,
#: a PDF or a word processor may contain), each with the Latin letter it is mistaken for; and
#: the micro sign, which Python reads as the Greek mu.
LOOKALIKE_LETTERS: dict[str, str] = {
    # Greek
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "ο": "o", "ν": "v", "ι": "i", "κ": "k",
    "ρ": "p", "υ": "u", "α": "a",
    # Cyrillic
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C",
    "Т": "T", "Х": "X", "У": "Y", "І": "I", "Ј": "J", "Ѕ": "S", "а": "a", "е": "e", "о": "o",
    "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s", "һ": "h", "ԁ": "d",
    "ԛ": "q", "ԝ": "w",
    # micro sign (U+00B5) and Greek mu (U+03BC)
    "µ": "μ",
}  # fmt: skip
#: Punctuation that looks like an operator, a space or a quote, with what was meant.
LOOKALIKE_PUNCTUATION: dict[str, str] = {
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
    "\ufe63": "-", "\uff0d": "-",
    "\u00a0": " ", "\u2007": " ", "\u2009": " ", "\u200a": " ", "\u202f": " ", "\u3000": " ",
    "\u200b": "", "\ufeff": "",
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
    "\u00d7": "*", "\u22c5": "*", "\u2217": "*", "\u00f7": "/", "\u2215": "/", "\u2044": "/",
}  # fmt: skip


def describe_char(c: str) -> str:
    """``'С' (U+0421 CYRILLIC CAPITAL LETTER ES)``."""
    return f"{c!r} (U+{ord(c):04X} {unicodedata.name(c, 'unnamed character')})"


def _skeleton(name: str) -> str:
    """``name`` with every lookalike letter replaced by the letter it is mistaken for."""
    return "".join(LOOKALIKE_LETTERS.get(c, c) for c in unicodedata.normalize("NFKC", name))


def lookalike_hint(name: str, known: Iterable[str] | Mapping[str, str]) -> str:
    """A sentence for an unknown ``name``: which known name it differs from only by lookalike
    characters (with their code points), else the closest known name; "" when none is close."""
    kinds = known if isinstance(known, Mapping) else {}
    names = [str(k) for k in known]
    base = unicodedata.normalize("NFKC", str(name))
    skel = _skeleton(base)
    for k in names:
        if k == name or _skeleton(k) != skel:
            continue
        kn = unicodedata.normalize("NFKC", k)
        diffs = [
            f"{describe_char(a)} where {k!r} has {describe_char(b)}"
            for a, b in zip(base, kn, strict=False)
            if a != b
        ]
        what = f"{kinds[k]} {k!r}" if kinds.get(k) else repr(k)
        return (
            f" — it looks like {what} but is a different name: {'; '.join(diffs)}. "
            "Retype the name (lookalike letters from another script, often copied from a "
            "document)"
        )
    close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.75) or [
        k for k in names if k.lower() == str(name).lower()
    ]
    return f" — did you mean {close[0]!r}?" if close else ""


def lookalike_punctuation(text: str) -> str | None:
    """A sentence naming the first lookalike punctuation character in ``text`` (an en-dash for a
    minus, a non-breaking space, a smart quote...), or None."""
    for i, c in enumerate(text):
        if c in LOOKALIKE_PUNCTUATION:
            meant = LOOKALIKE_PUNCTUATION[c]
            fix = (
                f"type {meant!r} instead"
                if meant.strip()
                else ("type a plain space instead" if meant else "delete it")
            )
            return f"character {i + 1} is {describe_char(c)}, which looks like {meant!r}; {fix}"
    return None


def check_unit_text(unit: str, where: str) -> None:
    """Refuse a unit that contains lookalike characters (a Cyrillic 'М' in 'MBq', an en-dash):
    units are compared as text (``µ`` and ``μ`` are both accepted as micro)."""
    for i, c in enumerate(unit):
        meant = LOOKALIKE_PUNCTUATION.get(c)
        if meant == " ":
            continue
        if meant is None and c in LOOKALIKE_LETTERS and c not in "µμ":
            meant = LOOKALIKE_LETTERS[c]
        if meant is not None:
            raise ModelError(
                f"{where}: unit {unit!r}: character {i + 1} is {describe_char(c)}, which looks "
                f"like {meant!r} but is a different character; retype the unit (valid: plain "
                "ASCII letters, digits and symbols such as / % *, and µ or μ for micro)"
            )


def _depth(tree: ast.AST) -> int:
    """Depth of a syntax tree, computed without recursion."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in ast.iter_child_nodes(node))
    return deepest


# ---- constant folding ------------------------------------------------------------------------
# A sub-expression without names is evaluated once, when the expression is compiled, in float64
# NumPy with every floating-point error raised, so that 1/0, 10**10**10, exp(1000) or log(-1)
# are refused with the file and the entry named (and no JAX operation runs at build time).
def _np_hill(x: Any, x50: Any, n: Any = 1.0) -> Any:
    x = np.maximum(x, 0.0)
    xn = x**n
    return xn / (x50**n + xn)


_FOLD_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "exp": np.exp, "log": np.log, "log10": np.log10, "sqrt": np.sqrt, "abs": np.abs,
    "min": _nary(np.minimum), "max": _nary(np.maximum), "where": np.where,
    "pow": np.power, "floor": np.floor, "ceil": np.ceil, "clip": np.clip, "hill": _np_hill,
    "expit": lambda x: 1.0 / (1.0 + np.exp(-x)), "logit": lambda p: np.log(p) - np.log1p(-p),
}  # fmt: skip
_FOLD_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide,
    ast.Pow: np.power, ast.Mod: np.mod,
}  # fmt: skip


class _FoldError(Exception):
    pass


def _fold(fn: Callable[..., Any], *args: Any) -> float | bool:
    """``fn(*args)`` on float64 scalars; raises _FoldError on any floating-point error."""
    try:
        with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            out = fn(*(np.float64(a) if not isinstance(a, bool) else a for a in args))
    except (FloatingPointError, OverflowError, ZeroDivisionError, ValueError) as exc:
        raise _FoldError(str(exc) or type(exc).__name__) from None
    out = np.asarray(out)
    if out.dtype == bool:
        return bool(out)
    value = float(out)
    if not math.isfinite(value):
        raise _FoldError("the result is not a finite number")
    return value


def _fold_reason(node: ast.AST, msg: str) -> str:
    what = ast.unparse(node)
    if len(what) > 60:
        what = what[:57] + "..."
    if "divide" in msg or "division" in msg:
        why = "divides by zero"
    elif "overflow" in msg or "finite" in msg or "too large" in msg:
        why = "overflows (its value is beyond ±1.8e308, the float64 range)"
    elif "invalid" in msg:
        why = "is undefined (e.g. log or sqrt of a negative number, 0**-1, a negative number to a fractional power)"
    else:
        why = f"cannot be evaluated ({msg})"
    return f"the constant part {what!r} {why}; give a finite value"


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
    return ModelError(f"{where}: cannot use expression {_short(source)}{col}: {message}")


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

    Sub-expressions without names are evaluated here (float64, every floating-point error
    refused); expressions longer than ``MAX_EXPRESSION_LENGTH`` characters or nested deeper
    than ``MAX_EXPRESSION_DEPTH`` are refused before they are compiled.
    """
    if isinstance(source, bool):
        raise ModelError(f"{where}: expected a number or an expression, got {source!r}")
    if isinstance(source, int | float):
        try:
            value = float(source)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise ModelError(f"{where}: {_short(source)} is not a finite number; give a finite value")  # fmt: skip
        return Expr(repr(value), frozenset(), lambda env: value)
    if not isinstance(source, str) or not source.strip():
        raise ModelError(f"{where}: expected a number or an expression, got {_short(source)}")
    text = source.strip()
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ModelError(
            f"{where}: the expression is {len(text)} characters long; at most "
            f"{MAX_EXPRESSION_LENGTH} are accepted (ldpk.model._expr.MAX_EXPRESSION_LENGTH): "
            "split it into `derived:` quantities or outputs"
        )
    bad = lookalike_punctuation(text)
    if bad is not None:
        raise ModelError(f"{where}: cannot use expression {_short(text)}: {bad}")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        if "too many nested" not in exc.msg:
            raise ModelError(f"{where}: {_short(text)} is not a valid expression: {exc.msg}") from None  # fmt: skip
        raise ModelError(
            f"{where}: the expression is nested too deeply ({exc.msg}); at most "
            f"{MAX_EXPRESSION_DEPTH} levels of operators, calls and parentheses are accepted"
        ) from None
    except (RecursionError, MemoryError):
        raise ModelError(
            f"{where}: the expression is nested too deeply to parse; at most "
            f"{MAX_EXPRESSION_DEPTH} levels of operators, calls and parentheses are accepted"
        ) from None
    depth = _depth(tree.body)
    if depth > MAX_EXPRESSION_DEPTH:
        raise ModelError(
            f"{where}: the expression is nested {depth} levels deep (operators, calls and "
            f"parentheses); at most {MAX_EXPRESSION_DEPTH} are accepted "
            "(ldpk.model._expr.MAX_EXPRESSION_DEPTH): split it into `derived:` quantities"
        )
    used: set[str] = set()
    allowed_set = set(allowed)

    def const(value: Any) -> tuple[Callable[[Mapping[str, Any]], Any], Any]:
        return (lambda env: value), value

    def folded(node: ast.AST, fn: Callable[..., Any], *args: Any) -> tuple[Callable, Any]:
        try:
            return const(_fold(fn, *args))
        except _FoldError as exc:
            raise _fail(where, text, node, _fold_reason(node, str(exc))) from None

    # build(node) -> (function of the environment, the value when it uses no names else _VAR)
    def build(node: ast.AST) -> tuple[Callable[[Mapping[str, Any]], Any], Any]:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool):
                return const(node.value)
            if isinstance(node.value, int | float):
                try:
                    f = float(node.value)
                except OverflowError:
                    f = math.inf
                if not math.isfinite(f):
                    raise _fail(where, text, node, f"the number {_short(ast.get_source_segment(text, node) or ast.unparse(node))} is beyond the float64 range (±1.8e308)")  # fmt: skip
                return const(f)
            raise _fail(where, text, node, f"constant {_short(node.value)} is not a number")
        if isinstance(node, ast.Name):
            name = node.id
            if name in allowed_set:
                used.add(name)
                return (lambda env: env[name]), _VAR
            if name in CONSTANTS:
                return const(CONSTANTS[name])
            if name in FUNCTIONS:
                raise _fail(where, text, node, f"{name!r} is a function: call it, e.g. {name}(x)")
            valid = ", ".join(sorted(allowed_set | set(CONSTANTS))) or "(none)"
            hint = lookalike_hint(name, allowed if isinstance(allowed, Mapping) else allowed_set)
            raise _fail(
                where, text, node, f"unknown name {name!r}{hint}; valid names here: {valid}"
            )
        if isinstance(node, ast.BinOp):
            op = _BINOPS.get(type(node.op))
            if op is None:
                raise _fail(where, text, node, f"operator {type(node.op).__name__} is not allowed")
            (left, lv), (right, rv) = build(node.left), build(node.right)
            if lv is not _VAR and rv is not _VAR:
                return folded(node, _FOLD_BINOPS[type(node.op)], lv, rv)
            if isinstance(node.op, ast.Div | ast.Mod) and rv is not _VAR and rv == 0:
                right_text = ast.get_source_segment(text, node.right) or ast.unparse(node.right)
                raise _fail(where, text, node, f"it divides by {right_text!r}, which is 0: the result is never finite")  # fmt: skip
            return (lambda env: op(left(env), right(env))), _VAR
        if isinstance(node, ast.UnaryOp):
            uop = _UNARY.get(type(node.op))
            if uop is None:
                raise _fail(where, text, node, f"operator {type(node.op).__name__} is not allowed")
            operand, ov = build(node.operand)
            if ov is not _VAR:
                if isinstance(node.op, ast.Not):
                    return const(not ov)
                return folded(node, np.negative if isinstance(node.op, ast.USub) else np.positive, ov)  # fmt: skip
            return (lambda env: uop(operand(env))), _VAR
        if isinstance(node, ast.Compare):
            ops = []
            for o in node.ops:
                c = _COMPARE.get(type(o))
                if c is None:
                    raise _fail(where, text, node, f"comparison {type(o).__name__} is not allowed")
                ops.append(c)
            built = [build(node.left)] + [build(c) for c in node.comparators]
            parts = [b[0] for b in built]
            if all(b[1] is not _VAR for b in built):
                vals = [b[1] for b in built]
                return const(all(bool(o(a, b)) for o, a, b in zip(ops, vals, vals[1:], strict=False)))  # fmt: skip

            def compare(env: Mapping[str, Any]) -> Any:
                vals = [p(env) for p in parts]
                out = ops[0](vals[0], vals[1])
                for i in range(1, len(ops)):
                    out = jnp.logical_and(out, ops[i](vals[i], vals[i + 1]))
                return out

            return compare, _VAR
        if isinstance(node, ast.BoolOp):
            is_and = isinstance(node.op, ast.And)
            fn = jnp.logical_and if is_and else jnp.logical_or
            built = [build(v) for v in node.values]
            if all(b[1] is not _VAR for b in built):
                truth = [bool(b[1]) for b in built]
                return const(all(truth) if is_and else any(truth))
            values = [b[0] for b in built]
            return (lambda env: _nary(fn)(*(v(env) for v in values))), _VAR
        if isinstance(node, ast.IfExp):
            (test, tv), (body, bv), (orelse, ev) = build(node.test), build(node.body), build(node.orelse)  # fmt: skip
            if tv is not _VAR and bv is not _VAR and ev is not _VAR:
                return const(bv if tv else ev)
            return (lambda env: jnp.where(test(env), body(env), orelse(env))), _VAR
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise _fail(
                    where, text, node, "only plain function calls such as exp(x) are allowed"
                )
            fname = node.func.id
            if fname not in FUNCTIONS:
                valid = ", ".join(sorted(FUNCTIONS))
                hint = lookalike_hint(fname, dict.fromkeys(FUNCTIONS, "function"))
                raise _fail(where, text, node, f"function {fname!r} is not allowed{hint}; valid: {valid}")  # fmt: skip
            if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                raise _fail(where, text, node, f"{fname}() takes positional arguments only")
            func, lo, hi, _ = FUNCTIONS[fname]
            n = len(node.args)
            if n < lo or (hi is not None and n > hi):
                want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi else f"at least {lo}"
                raise _fail(where, text, node, f"{fname}() takes {want} arguments, got {n}")
            built = [build(a) for a in node.args]
            if all(b[1] is not _VAR for b in built):
                return folded(node, _FOLD_FUNCTIONS[fname], *(b[1] for b in built))
            args = [b[0] for b in built]
            return (lambda env: func(*(a(env) for a in args))), _VAR
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

    fn, _ = build(tree.body)
    return Expr(text, frozenset(used), fn)


_VAR = object()  # build(): the sub-expression uses names (it is not a constant)


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (long expressions stay readable in errors)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-1]}"


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
