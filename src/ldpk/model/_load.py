"""Loading model files and the built-in model library."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicate keys (a silent overwrite hides mistakes)."""


def _construct_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict:
    keys = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            raise ModelError(f"line {key_node.start_mark.line + 1}: key {key!r} appears twice")
        keys.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


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
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        spec = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ModelError(f"{path}: not valid YAML: {exc}") from None
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
