"""Model intake from the command line: the same checks and records as the Models screen.

    python -m ui.models_cli import PKG [--activate] [--path VAULT] [--user NAME]
    python -m ui.models_cli list     [--path VAULT]
    python -m ui.models_cli activate ENTRY [--path VAULT]
    python -m ui.models_cli rollback [--path VAULT]
    python -m ui.models_cli compare ENTRY [--path VAULT]

``import`` runs every check of the Models screen (trusted key, sha256, no rollback, ONNX checks, sandboxed first
inference), then the acceptance test against the current model (golden set, and the plant's reviewed analyses when
there are enough: ``ui.models.plant_set``), prints the tables and stores the package in the vault (audited);
``--activate`` also activates it. ``compare`` runs the same acceptance test again for an accepted version against
the model in use, on the plant's reviewed analyses as they are now (audited ``model_compared``). The passphrase
comes from a hidden prompt or CRYSTALQC_PASSPHRASE. Exit status: 0 ok, 1 refused (reason printed), 2 usage or vault
error.
No Streamlit here: it shares ui.models with the app.
"""
from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Sequence

from analysis.errors import CrystalQCError, ModelPackageError
from analysis.pipeline import make_detector
from ui import models
from vault.__main__ import _open


def _current_detector(vault):
    active = models.active_model(vault)
    if active is None:
        return make_detector("auto")
    return models.detector_from_bytes(models.load_model_bytes(vault, active), name=active.name,
                                      version=active.version)


def cmd_import(vault, args) -> int:
    data = Path(args.package).read_bytes()
    vp = models.check_package(vault, data)
    candidate = models.detector_from_bytes(vp.model_bytes, name=vp.manifest.name, version=vp.manifest.version)
    report = models.acceptance_test(candidate, _current_detector(vault), plant=models.plant_set(vault))
    _print_report(report)
    entry = models.store_package(vault, data, vp, report, user=vault.user)
    print(f"stored {entry.entry}")
    if args.activate:
        models.activate(vault, entry.entry, user=vault.user)
        print(f"activated {entry.label}")
    return 0


def _print_report(report: dict) -> None:
    print("golden set (rendered micrographs):")
    for row in report["rows"]:
        print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
    plant = report["plant"]
    print(f"this plant's reviewed analyses: {models.plant_summary(plant)}")
    for row in plant.get("rows", []):
        print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
    if plant.get("rows"):
        print("  " + models.plant_difference_text(plant))
    else:
        print(f"  (no comparison: at least {models.PLANT_MIN_IMAGES} reviewed analyses are needed)")
    if report["worse"]:
        print(f"warning: the candidate is worse on {', '.join(report['worse'])}", file=sys.stderr)


def cmd_compare(vault, args) -> int:
    entry = next((m for m in models.installed_models(vault) if m.entry == args.entry), None)
    if entry is None:
        raise ModelPackageError(f"{args.entry} is not an accepted model package; see 'list'.")
    _print_report(models.compare_installed(vault, entry, _current_detector(vault), user=vault.user))
    return 0


def cmd_list(vault, args) -> int:
    active = models.active_model(vault)
    for e in models.installed_models(vault):
        mark = "*" if active is not None and e.entry == active.entry else " "
        print(f"{mark} {e.entry}  sha256 {e.sha256[:12]}")
    if active is None:
        print("(the shipped default model is active)")
    return 0


def cmd_activate(vault, args) -> int:
    print(f"activated {models.activate(vault, args.entry, user=vault.user).label}")
    return 0


def cmd_rollback(vault, args) -> int:
    entry = models.roll_back(vault, user=vault.user)
    print(f"rolled back to {entry.label if entry else 'the shipped default'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ui.models_cli", description=__doc__.split("\n\n")[0])
    ap.add_argument("--path", type=Path, default=None, help="vault folder (default: CRYSTALQC_VAULT or the default)")
    ap.add_argument("--user", default=None, help="name recorded in the audit log (default: the login name)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("import")
    p.add_argument("package")
    p.add_argument("--activate", action="store_true")
    sub.add_parser("list")
    p = sub.add_parser("activate")
    p.add_argument("entry")
    sub.add_parser("rollback")
    p = sub.add_parser("compare")
    p.add_argument("entry")
    args = ap.parse_args(argv)
    args.user = args.user or getpass.getuser()
    commands = {"import": cmd_import, "list": cmd_list, "activate": cmd_activate, "rollback": cmd_rollback,
                "compare": cmd_compare}
    try:
        vault = _open(args)
    except (CrystalQCError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        with vault:
            return commands[args.cmd](vault, args)
    except ModelPackageError as e:
        print(f"refused: {e}", file=sys.stderr)
        return 1
    except (CrystalQCError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
