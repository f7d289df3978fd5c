"""Loading model files and the built-in model library."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ldpk.errors import ModelError
from ldpk.model._model import Model, build_model


def models_dir() -> Path:
    """The built-in model library: ``ldpk/_models`` in a wheel, ``<repo>/models`` in a checkout."""
    here = Path(__file__).resolve().parent.parent
    for cand in (here / "_models", here.parent.parent / "models"):
        if cand.is_dir():
            return cand
    raise ModelError("the built-in model library is missing from this installation of ldpk")


def builtin_models() -> dict[str, Path]:
    """Names of the built-in models mapped to their files."""
    return {p.stem: p for p in sorted(models_dir().glob("*.yaml"))}


#: Largest model or config file read, in bytes; a larger file is refused before it is read.
#: Raise it for a legitimately huge file with ``ldpk.model._load.MAX_FILE_BYTES = ...``.
MAX_FILE_BYTES = 10 * 2**20
#: Most YAML nodes a file may expand to once its aliases (``*name``) are followed: bounds the
#: "billion laughs" expansion of nested aliases. ``ldpk.model._load.MAX_YAML_NODES`` to raise it.
MAX_YAML_NODES = 1_000_000
#: Most alias uses (``*name``) in one YAML file.
MAX_YAML_ALIASES = 10_000
#: Deepest nesting of YAML mappings and lists.
MAX_YAML_DEPTH = 100

_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def read_text_file(path: str | Path, what: str = "model file") -> str:
    """The text of a model or config file: refused (ModelError naming the file) when it is
    missing, larger than ``MAX_FILE_BYTES`` or not text in a Unicode encoding. UTF-8 (with or
    without a byte-order mark), UTF-16 and UTF-32 with a byte-order mark, and UTF-16 without
    one are read."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such {what}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ModelError(
            f"{path}: the {what} is {size:,} bytes; at most {MAX_FILE_BYTES:,} are read "
            "(ldpk.model._load.MAX_FILE_BYTES; raise it for a larger file)"
        )
    with path.open("rb") as f:
        raw = f.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:  # it grew since stat()
        raise ModelError(f"{path}: the {what} is over {MAX_FILE_BYTES:,} bytes (ldpk.model._load.MAX_FILE_BYTES)")  # fmt: skip
    encoding = next((enc for bom, enc in _BOMS if raw.startswith(bom)), None)
    head = raw[:64] if len(raw) % 2 == 0 else b""
    if encoding is None and len(head) >= 2:
        # UTF-16 without a byte-order mark: in ASCII text every other byte is zero
        if not any(head[1::2]) and all(head[0::2]):
            encoding = "utf-16-le"
        elif not any(head[0::2]) and all(head[1::2]):
            encoding = "utf-16-be"
    encoding = encoding or "utf-8"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ModelError(
            f"{path}: the {what} is not valid {encoding.upper().replace('-SIG', '')} text: byte "
            f"{exc.start + 1} (line {line}) is 0x{raw[exc.start]:02x}; save it as UTF-8 "
            "(UTF-16 and UTF-32 with a byte-order mark are read too)"
        ) from None
    if "\x00" in text:
        raise ModelError(f"{path}: the {what} contains NUL characters: it is not a text file")
    return text.removeprefix("\ufeff")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicate keys (a silent overwrite hides mistakes) and
    bounds nesting depth, alias uses and the size the aliases expand to."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                mark = self.peek_event().start_mark
                raise ModelError(
                    f"line {mark.line + 1}: more than {MAX_YAML_ALIASES} alias uses (*name); "
                    "ldpk.model._load.MAX_YAML_ALIASES bounds them"
                )
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise ModelError(
                    f"line {mark.line + 1}: mappings and lists are nested more than "
                    f"{MAX_YAML_DEPTH} levels deep (ldpk.model._load.MAX_YAML_DEPTH)"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        node = super().compose_document()
        _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph that expands (aliases followed) to more than MAX_YAML_NODES nodes,
    or that contains itself (a recursive alias). Without recursion: each node's expanded size
    is computed once, after its children's."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            if size[key] > MAX_YAML_NODES:
                raise ModelError(
                    f"line {node.start_mark.line + 1}: the aliases (*name) expand this file to "
                    f"more than {MAX_YAML_NODES:,} values (ldpk.model._load.MAX_YAML_NODES); "
                    "a model file never needs that many: write the entries out"
                )
            continue
        if key in size:
            continue
        if key in on_path:
            raise ModelError(
                f"line {node.start_mark.line + 1}: an alias (*name) refers to a node that "
                "contains it (a recursive structure), which has no finite value"
            )
        on_path.add(key)
        stack.append((node, True))
        for c in children:
            if id(c) in on_path:
                raise ModelError(
                    f"line {c.start_mark.line + 1}: an alias (*name) refers to a node that "
                    "contains it (a recursive structure), which has no finite value"
                )
            if id(c) not in size:
                stack.append((c, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _construct_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict:
    keys = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            seen = key in keys
        except TypeError:
            raise ModelError(
                f"line {key_node.start_mark.line + 1}: a key must be a name or a number, not "
                f"a {type(key).__name__}"
            ) from None
        if seen:
            raise ModelError(f"line {key_node.start_mark.line + 1}: key {key!r} appears twice")
        keys.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml_file(path: str | Path, what: str = "model file") -> Any:
    """A YAML file parsed safely (see :func:`read_text_file` and :class:`_UniqueKeyLoader`);
    every problem is a ModelError that names the file and, where known, the line."""
    text = read_text_file(path, what)
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what_ = "; ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise ModelError(f"{path}{at}: not valid YAML: {what_}") from None
    except yaml.YAMLError as exc:
        raise ModelError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ModelError(f"{path}: not valid YAML: nested too deeply to read") from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer of more than 4300 digits
        raise ModelError(f"{path}: not valid YAML: {exc}") from None


def load_model(name_or_path: str | Path) -> Model:
    """Load a model by built-in name (``ldpk models`` lists them) or from a YAML file."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        lib = builtin_models()
        if str(name_or_path) not in lib:
            raise ModelError(
                f"no built-in model {str(name_or_path)!r}; built-in models: {', '.join(lib)} "
                "(or give the path of a .yaml model file)"
            )
        path = lib[str(name_or_path)]
    spec = read_yaml_file(path, "model file")
    return build_model(spec, source=str(path))


@dataclass(frozen=True)
class CheckReport:
    """What ``ldpk check`` found: the model (if valid), whether it is a linear system
    (``Model.is_linear_system``), and notes."""

    model: Model
    linear: bool
    notes: tuple[str, ...]

    @property
    def kernel(self) -> str:
        """The kernel 'auto' picks, in words."""
        if self.linear:
            return "linear (exact matrix exponential)"
        if self.model.is_piecewise_linear:
            return "piecewise linear (exact matrix exponentials between switch times)"
        return "nonlinear (diffrax ODE)"

    def text(self) -> str:
        m = self.model
        lines = [
            f"{m.source}: OK — model {m.name!r}",
            f"  compartments: {', '.join(m.compartment_names)}",
            f"  parameters:   {', '.join(f'{p.name} [{p.unit}]' for p in m.parameters)}",
            f"  routes:       {', '.join(f'{r.name} -> {r.target}' for r in m.routes) or '(none)'}",
            f"  outputs:      {', '.join(m.output_names) or '(none)'}",
            f"  kernel:       {self.kernel}",
        ]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def check_model(name_or_path: str | Path) -> CheckReport:
    """Validate a model file; raises ModelError on the first problem, else returns a report."""
    m = load_model(name_or_path)
    notes = []
    if not m.references:
        notes.append("no `references:` — cite the source of the structure and default values")
    for c in m.compartments:
        if not c.unit:
            notes.append(f"compartment {c.name!r} has no unit")
    if not m.outputs:
        notes.append("no outputs: only compartment amounts can be predicted")
    sinks = m.sink_compartments
    if sinks:
        notes.append(
            f"compartment(s) {', '.join(sinks)} have no outflow: amounts accumulate there and "
            "steady-state dosing (SS) is undefined for this model"
        )
    return CheckReport(m, m.is_linear_system, tuple(notes))
