"""CAR-T cellular kinetics: the Stein et al. 2019 model and the antigen-driven variant.

Simulates (1) blood transgene levels for a virtual population of 200 patients drawn with the
model's between-subject variability (`cart_cellular_kinetics`), with the median and 5-95th
percentiles, and (2) CAR-T cells against tumour burden for three infused cell doses in the
antigen-driven model (`cart_antigen_driven`). Saves cart_kinetics.png.

Usage: python examples/cart_cellular_kinetics.py [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import ldpk  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="ldpk-examples", help="output directory")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    stein = ldpk.load_model("cart_cellular_kinetics")
    rng = np.random.default_rng(1)
    params = {
        p.name: p.value * np.exp(p.iiv * rng.standard_normal(200))
        for p in stein.parameters
        if p.iiv
    }
    t = np.arange(0.0, 365.0, 0.5)
    pop = ldpk.simulate(stein, params, [ldpk.Bolus(1.0, route="iv")], t)
    lo, mid, hi = np.percentile(np.asarray(pop["transgene"]), [5, 50, 95], axis=0)

    mech = ldpk.load_model("cart_antigen_driven")
    t2 = np.arange(0.0, 180.0, 0.5)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.fill_between(t, lo, hi, alpha=0.3, label="5-95th percentile")
    a.plot(t, mid, label="median")
    a.set(yscale="log", xlabel="time [d]", ylabel="transgene [copies/µg DNA]",
          title="Stein et al. 2019 model, 200 virtual patients")  # fmt: skip
    a.legend(frameon=False)
    for dose, color in [(1e7, "C0"), (1e8, "C1"), (1e9, "C2")]:
        sim = ldpk.simulate(mech, None, [ldpk.Bolus(dose, route="iv")], t2)
        b.plot(t2, np.asarray(sim["cart_cells"]), color=color, label=f"CAR-T, dose {dose:.0e}")
        b.plot(t2, np.asarray(sim["tumour_burden"]), color=color, ls="--", label="tumour")
    b.set(yscale="log", ylim=(1e0, 1e13), xlabel="time [d]", ylabel="cells",
          title="antigen-driven expansion (illustrative values)")  # fmt: skip
    b.legend(frameon=False, fontsize=7, ncol=2)
    fig.tight_layout()
    path = out / "cart_kinetics.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
