"""Offline training of the YOLO crystal detector with ultralytics (training venv only, never the app).

Together with :mod:`detection.export` this is the only module that imports torch/ultralytics, and it does so inside
functions: importing it for its pure helpers (data checks, run records) needs the standard library only.

Run in the training venv (``.venv-train``, ``requirements-train.txt``)::

    python -m detection.train --data DIR/data.yaml --model yolo11n.yaml --imgsz 640 --epochs 30 --batch 16 \\
        --workers 0 --out runs/NAME [--resume] [--time-hours H] [--device auto] [--seed 0]

Offline by construction: ultralytics is configured (before its import) with ``YOLO_OFFLINE=1``,
``YOLO_AUTOINSTALL=0``, a project config dir ``.yolo/`` with ``sync`` and all integrations off, a bundled font (else it
downloads Arial.ttf), a model built from a yaml (no weights download, ``pretrained=False``) and ``amp=False`` (the AMP
self-check downloads weights on CUDA).

Writes ``OUT/`` (ultralytics' run folder: ``weights/best.pt``, ``weights/last.pt``, ``results.csv``, plots),
``OUT/data.yaml`` (the checked copy of the data config that training really used, with absolute paths) and
``OUT/training.json`` (recipe + final validation metrics; read by :mod:`detection.export` for the manifest).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from analysis.errors import CrystalQCError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Project-controlled ultralytics config dir (git-ignored): settings.json, fonts.
DEFAULT_CONFIG_DIR = REPO_ROOT / ".yolo"
#: Bundled freely licensed TrueType font (see detection/fonts/LICENSE.txt).
FONT_FILE = Path(__file__).resolve().parent / "fonts" / "DejaVuSans.ttf"
#: The classes of the product; a data config with other names is refused.
EXPECTED_NAMES: tuple[str, ...] = ("crystal", "agglomerate")
#: The class lists a training set may have: the counted classes, optionally followed by 'mimic' (out-of-focus
#: crystals and bubbles labelled as such, ``python -m detection.synthetic --mimic-class``; the app excludes them).
ALLOWED_NAMES: tuple[tuple[str, ...], ...] = (EXPECTED_NAMES, EXPECTED_NAMES + ("mimic",))
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
RECORD_NAME = "training.json"
#: Ultralytics integrations switched off in settings (each would log to or upload to a service).
#: ``--activation``: the network's activation function as the model yaml's ``activation`` entry (ultralytics builds
#: every Conv with it). ReLU instead of yolo11's SiLU: onnxruntime folds a ReLU into the INT8 convolution before it,
#: where a SiLU costs a quantised sigmoid and a quantised product per convolution (20 % of the INT8 network's time);
#: the INT8 network then runs in 0.71 x the time at 1280 x 1024 and 0.77 x at 2592 x 1944 (docs/model_history.md,
#: session 16).
ACTIVATIONS: dict[str, str] = {"silu": "nn.SiLU()", "relu": "nn.ReLU()"}
#: ``--relu-layers``: the model-yaml key (ours; ultralytics keeps unknown keys and ignores them) listing the layers
#: (indices of the yaml's backbone + head list) whose activations are ReLU while the others keep the yaml's own.
#: Before any training, switching 1.5.0's backbone costs little on the real tiles (but rendered recall) where switching
#: every layer drops real-tile F1 to 0.62 (docs/model_history.md, session 17).
RELU_LAYERS_KEY = "crystalqc_relu_layers"
_INTEGRATIONS = ("clearml", "comet", "dvc", "hub", "mlflow", "neptune", "raytune", "tensorboard", "wandb")


class TrainingSetupError(CrystalQCError, ValueError):
    """Training cannot start: bad data config, missing images, wrong options or an unusable run folder."""


# ---------------------------------------------------------------------------------------------------------------------
# Pure helpers (standard library only)
# ---------------------------------------------------------------------------------------------------------------------
def count_images(folder: Path) -> int:
    """Number of image files (by suffix, see IMAGE_SUFFIXES) directly in ``folder``; 0 when it does not exist."""
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _names_tuple(names: object) -> tuple[str, ...]:
    if isinstance(names, Mapping):
        keys = list(names)
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in keys) or sorted(keys) != list(
            range(len(keys))
        ):
            raise TrainingSetupError("data.yaml 'names' must map class ids 0..n-1 to names, e.g. {0: crystal}.")
        return tuple(str(names[i]) for i in range(len(keys)))
    if isinstance(names, (list, tuple)):
        return tuple(str(n) for n in names)
    raise TrainingSetupError("data.yaml lacks 'names' (class names by id, e.g. {0: crystal, 1: agglomerate}).")


def check_data_config(raw: Mapping[str, Any], *, yaml_dir: Path) -> dict[str, Any]:
    """Check a parsed YOLO data config and return a clean copy with absolute paths.

    raw: the parsed data.yaml. Needs 'train' and 'val' (folders of images, relative to 'path'), 'names' one of
    ALLOWED_NAMES; 'path' (dataset root) is resolved relative to ``yaml_dir`` (ultralytics would resolve a relative
    root against the current directory instead). Optional 'test'; optional 'seed' (the generator's seed, recorded).
    Returns {'path', 'train', 'val', ['test'], 'names': {id: name}, 'nc', 'seed', 'images': {split: count}}.
    Raises TrainingSetupError for a 'download' key (ultralytics would run it as code), missing keys, other class
    names, a missing split folder or an empty train/val split.
    """
    if not isinstance(raw, Mapping):
        raise TrainingSetupError("data.yaml must be a mapping with keys path, train, val, names.")
    if "download" in raw:
        raise TrainingSetupError(
            "data.yaml has a 'download' key, which ultralytics would execute as code; remove it (the data must "
            "already be on disk)."
        )
    names = _names_tuple(raw.get("names"))
    if names not in ALLOWED_NAMES:
        raise TrainingSetupError(f"data.yaml names are {list(names)}; this product trains "
                                 f"{' or '.join(str(list(n)) for n in ALLOWED_NAMES)}.")
    if "nc" in raw and raw["nc"] != len(names):
        raise TrainingSetupError(f"data.yaml nc={raw['nc']!r} disagrees with its {len(names)} names.")
    root = Path(str(raw.get("path") or "."))
    root = (root if root.is_absolute() else yaml_dir / root).resolve()
    clean: dict[str, Any] = {"path": str(root)}
    images: dict[str, int] = {}
    for split in ("train", "val", "test"):
        value = raw.get(split)
        if value is None:
            if split == "test":
                continue
            raise TrainingSetupError(f"data.yaml lacks '{split}:' (a folder of images relative to the dataset root).")
        if not isinstance(value, str):
            raise TrainingSetupError(f"data.yaml '{split}:' must be one folder path, got {type(value).__name__}.")
        folder = (root / value).resolve()
        if not folder.is_dir():
            raise TrainingSetupError(f"The {split} image folder {folder} does not exist; generate the data first.")
        images[split] = count_images(folder)
        if images[split] == 0 and split != "test":
            raise TrainingSetupError(f"The {split} image folder {folder} holds no images.")
        clean[split] = str(folder)
    seed = raw.get("seed")
    clean.update(
        names={i: n for i, n in enumerate(names)},
        nc=len(names),
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        images=images,
    )
    return clean


def resolve_device(requested: str, *, cuda_available: bool) -> str:
    """Map the --device option to an ultralytics device string: 'auto' -> '0' with CUDA else 'cpu'.

    Raises TrainingSetupError for a CUDA device when CUDA is not available, or an unknown value.
    """
    value = requested.strip().lower()
    if value == "auto":
        return "0" if cuda_available else "cpu"
    if value == "cpu":
        return "cpu"
    if value.replace(",", "").isdigit() or value.startswith("cuda"):
        if not cuda_available:
            raise TrainingSetupError(f"--device {requested} asks for a GPU but torch sees no CUDA device; use auto.")
        return value.removeprefix("cuda:")
    raise TrainingSetupError(f"--device must be auto, cpu or a CUDA index such as 0, got {requested!r}.")


def read_record(run_dir: Path) -> dict[str, Any]:
    """The run record ``run_dir/training.json`` as a dict ({} when absent). Raises TrainingSetupError if unreadable."""
    path = run_dir / RECORD_NAME
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TrainingSetupError(f"The run record {path} is unreadable ({e}); delete it or start a new --out.") from e
    if not isinstance(record, dict):
        raise TrainingSetupError(f"The run record {path} is not a JSON object; delete it or start a new --out.")
    return record


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as indented JSON to ``path`` via a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def metrics_from_results(results: Mapping[str, Any]) -> dict[str, float]:
    """Pick the box metrics from ultralytics' results dict ('metrics/mAP50(B)', ...) -> {'mAP50', ...}.

    Missing keys are left out (never invented).
    """
    keys = {
        "precision": "metrics/precision(B)",
        "recall": "metrics/recall(B)",
        "mAP50": "metrics/mAP50(B)",
        "mAP50_95": "metrics/mAP50-95(B)",
    }
    return {ours: round(float(results[theirs]), 5) for ours, theirs in keys.items() if theirs in results}


# ---------------------------------------------------------------------------------------------------------------------
# ultralytics (imported lazily, after the offline set-up)
# ---------------------------------------------------------------------------------------------------------------------
def configure_offline(config_dir: Path = DEFAULT_CONFIG_DIR) -> None:
    """Prepare the process so ultralytics never reaches for the network; call before importing ultralytics.

    Sets YOLO_OFFLINE=1, YOLO_AUTOINSTALL=0, YOLO_CONFIG_DIR=config_dir, removes ULTRALYTICS_API_KEY (no Platform
    upload), copies the bundled font to config_dir/Ultralytics/Arial.ttf and Arial.Unicode.ttf, then (importing
    ultralytics) switches settings sync and every integration off. Raises TrainingSetupError if the font is missing.
    """
    if not FONT_FILE.is_file():
        raise TrainingSetupError(f"The bundled font {FONT_FILE} is missing; restore detection/fonts/ from git.")
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    os.environ.pop("ULTRALYTICS_API_KEY", None)
    font_dir = config_dir / "Ultralytics"
    font_dir.mkdir(parents=True, exist_ok=True)
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = font_dir / name
        if not target.exists() or target.stat().st_size != FONT_FILE.stat().st_size:
            shutil.copyfile(FONT_FILE, target)
    if "ultralytics" in sys.modules and not sys.modules["ultralytics"].__dict__.get("_crystal_offline"):
        logger.warning("ultralytics was imported before configure_offline(); its online checks may have run")
    import ultralytics
    from ultralytics import settings

    ultralytics._crystal_offline = True  # type: ignore[attr-defined]
    wanted: dict[str, Any] = {"sync": False, "api_key": "", "weights_dir": str(config_dir / "weights")}
    wanted.update({k: False for k in _INTEGRATIONS if k in settings})
    if any(settings.get(k) != v for k, v in wanted.items()):
        settings.update(wanted)


def model_config(model_yaml: str, activation: str | None,
                 relu_layers: Sequence[int] | None = None) -> dict[str, Any]:
    """The ultralytics model yaml ``model_yaml`` (e.g. yolo11n.yaml) as ultralytics reads it (its scale letter taken
    from the name), with ``activation`` (a key of :data:`ACTIVATIONS`) set; None keeps the yaml's own.
    ``relu_layers`` is recorded under :data:`RELU_LAYERS_KEY`; a network built from the config gets them with
    :func:`set_relu_layers` (the trainer of :func:`train` does that). Needs ultralytics (call
    :func:`configure_offline` first)."""
    from ultralytics.nn.tasks import yaml_model_load

    cfg = yaml_model_load(model_yaml)
    if activation is not None:
        cfg["activation"] = ACTIVATIONS[activation]
    if relu_layers:
        cfg[RELU_LAYERS_KEY] = sorted(set(int(i) for i in relu_layers))
    return cfg


def parse_layers(spec: str) -> list[int]:
    """``"0-4,23"`` -> [0, 1, 2, 3, 4, 23]. Raises TrainingSetupError for anything else."""
    layers: set[int] = set()
    for part in spec.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            a, b = int(first), int(last) if dash else int(first)
        except ValueError:
            raise TrainingSetupError(f"--relu-layers: {spec!r} is not a list of layer indices such as 0-4,23.") from None
        if not 0 <= a <= b < 1000:
            raise TrainingSetupError(f"--relu-layers: bad range {part!r} in {spec!r}.")
        layers.update(range(a, b + 1))
    return sorted(layers)


def set_relu_layers(model: Any, layers: Sequence[int]) -> int:
    """Give every convolution block (ultralytics ``Conv``, depthwise ones included) of the listed layers of
    ``model`` (a DetectionModel) a ReLU instead of its SiLU, in place; weights untouched. Returns how many were
    changed. Raises TrainingSetupError for a layer index the network does not have."""
    from torch import nn
    from ultralytics.nn.modules.conv import Conv

    n_layers = len(model.model)
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad:
        raise TrainingSetupError(f"--relu-layers: the network has layers 0-{n_layers - 1}, not {bad}.")
    changed = 0
    for i in layers:
        for module in model.model[i].modules():
            if isinstance(module, Conv) and isinstance(module.act, nn.SiLU):
                module.act = nn.ReLU()
                changed += 1
    return changed


def _trainer_class() -> Any:
    """ultralytics' detection trainer, building every network (fine-tune, scratch, resume) with the ReLU layers its
    yaml lists under :data:`RELU_LAYERS_KEY` (the trainer rebuilds the network from the yaml, so changing the modules
    of a loaded checkpoint would not last)."""
    from ultralytics.models.yolo.detect import DetectionTrainer

    class ReluLayersTrainer(DetectionTrainer):
        def get_model(self, cfg: Any = None, weights: Any = None, verbose: bool = True) -> Any:
            model = super().get_model(cfg=cfg, weights=weights, verbose=verbose)
            layers = model.yaml.get(RELU_LAYERS_KEY) if isinstance(model.yaml, dict) else None
            if layers:
                logger.info("ReLU in layers %s: %d activations", layers, set_relu_layers(model, layers))
            return model

    return ReluLayersTrainer


def _yaml_with_activation(model_yaml: str, activation: str | None, out: Path,
                          relu_layers: Sequence[int] | None = None) -> Path:
    """:func:`model_config` written to the run folder as ``<stem>-<activation>.yaml`` (``<stem>-relu-layers.yaml``
    with ``relu_layers``; the stem keeps the scale letter ultralytics reads from the name; the keys it adds on
    reading are left out)."""
    import yaml

    cfg = {k: v for k, v in model_config(model_yaml, activation, relu_layers).items()
           if k not in ("scale", "yaml_file")}
    path = out / f"{Path(model_yaml).stem}-{activation or 'relu-layers'}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def _load_yaml(path: Path) -> Any:
    import yaml  # training venv only (ultralytics depends on PyYAML)

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise TrainingSetupError(f"Cannot read the data config {path}: {e}") from e


def _versions() -> dict[str, str]:
    import torch
    import torchvision
    import ultralytics

    return {
        "ultralytics": ultralytics.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }


def _device_description(device: str) -> str:
    import torch

    if device == "cpu":
        cpu = platform.processor() or platform.machine()
        return f"cpu ({cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    return f"cuda:{device} ({torch.cuda.get_device_name(int(device.split(',')[0]))})"


def _final_metrics(trainer: Any) -> dict[str, Any]:
    results = getattr(trainer, "metrics", None) or {}
    metrics: dict[str, Any] = metrics_from_results(results)
    validator_metrics = getattr(getattr(trainer, "validator", None), "metrics", None)
    box = getattr(validator_metrics, "box", None)
    if box is not None and getattr(box, "ap_class_index", None) is not None:
        names = trainer.data["names"]
        per_class = {}
        for i, cls in enumerate(box.ap_class_index):
            per_class[names[int(cls)]] = {
                "precision": round(float(box.p[i]), 5),
                "recall": round(float(box.r[i]), 5),
                "mAP50": round(float(box.ap50[i]), 5),
                "mAP50_95": round(float(box.ap[i]), 5),
            }
        metrics["per_class"] = per_class
    metrics["split"] = "val"
    metrics["weights"] = "best.pt"
    return metrics


def _checkpoint_finished(last_pt: Path) -> bool:
    import torch

    ckpt = torch.load(last_pt, map_location="cpu", weights_only=False)
    return ckpt.get("epoch", -1) == -1 or ckpt.get("optimizer") is None


def train(
    data_yaml: Path,
    *,
    out: Path,
    model_yaml: str = "yolo11n.yaml",
    imgsz: int = 640,
    epochs: int = 30,
    batch: int = 16,
    workers: int = 0,
    device: str = "auto",
    seed: int = 0,
    time_hours: float | None = None,
    resume: bool = False,
    patience: int = 100,
    threads: int | None = None,
    data_seed: int | None = None,
    init_weights: Path | None = None,
    activation: str | None = None,
    relu_layers: Sequence[int] | None = None,
    distill_from: Path | None = None,
    lr0: float | None = None,
    warmup_epochs: float | None = None,
    config_dir: Path = DEFAULT_CONFIG_DIR,
) -> dict[str, Any]:
    """Train (or resume) a YOLO detect model from scratch on ``data_yaml`` into the run folder ``out``.

    Deterministic for a given seed and device (ultralytics ``seed``, ``deterministic=True``). With ``resume`` the
    run continues from ``out/weights/last.pt`` with the options stored in it. ``time_hours`` caps the wall time
    (ultralytics then fits the learning-rate schedule to the time instead of ``epochs``). ``threads`` sets the torch
    CPU threads (ultralytics alone uses cpu_count - 1, i.e. 1 on a 2-core machine); None keeps ultralytics' choice.
    ``data_seed`` (the generator seed of the data set) is only recorded; without it a 'seed' key of data.yaml is.
    ``init_weights`` (a .pt checkpoint, e.g. the shipped model's best.pt) starts a new run from those weights instead
    of from scratch (fine-tuning; the model yaml is then the checkpoint's own). ``activation`` (a key of
    :data:`ACTIVATIONS`) rebuilds the network with that activation function before training, keeping every weight
    (a checkpoint's weights fit any activation); None keeps the yaml's or checkpoint's own. ``relu_layers`` (layer
    indices) gives only those layers ReLU (:func:`set_relu_layers`), recorded in the model yaml so that resumed runs
    and exports keep them; not together with ``activation``. ``distill_from`` (a .pt) is a teacher: ultralytics'
    knowledge distillation (``distill_model``) adds a loss pulling the student's features at the head's inputs
    towards the teacher's, e.g. to bring a network with ReLU back to the SiLU network it was switched from.
    ``lr0`` / ``warmup_epochs`` (:func:`schedule_kwargs`) set the learning rate and its warm-up, e.g. lower and
    none to continue from a model that is already trained; None keeps ultralytics' choice.
    Returns the run record (also written to ``out/training.json``).
    Raises TrainingSetupError for bad data/options, a finished run given --resume, or an existing run without it.
    """
    out = out.resolve()
    last_pt = out / "weights" / "last.pt"
    if imgsz % 32 or not 32 <= imgsz <= 2048:
        raise TrainingSetupError(f"--imgsz must be a multiple of 32 between 32 and 2048, got {imgsz}.")
    if epochs < 1 or batch < 1 or workers < 0 or (threads is not None and threads < 1):
        raise TrainingSetupError("--epochs, --batch and --threads must be at least 1 and --workers at least 0.")
    if resume and not last_pt.is_file():
        raise TrainingSetupError(f"--resume: no checkpoint {last_pt}; start without --resume.")
    if not resume and last_pt.exists():
        raise TrainingSetupError(f"{out} already holds a run; add --resume to continue it or choose another --out.")
    if activation is not None and (resume or activation not in ACTIVATIONS):
        raise TrainingSetupError(f"--activation must be one of {', '.join(ACTIVATIONS)} and cannot go with --resume "
                                 f"(got {activation}).")
    if relu_layers is not None and (resume or activation is not None or not relu_layers):
        raise TrainingSetupError("--relu-layers cannot go with --resume (the run keeps its own) or --activation, and "
                                 "needs at least one layer.")
    relu_layers = sorted(set(relu_layers)) if relu_layers else None
    if distill_from is not None and (resume or not Path(distill_from).is_file()):
        raise TrainingSetupError(f"--distill-from must name an existing .pt file and cannot go with --resume "
                                 f"(got {distill_from}).")
    schedule = schedule_kwargs(lr0, warmup_epochs)
    if schedule and resume:
        raise TrainingSetupError("--lr0 and --warmup-epochs cannot go with --resume (the run keeps its own).")
    if init_weights is not None and (resume or not Path(init_weights).is_file()):
        raise TrainingSetupError(f"--init-weights must name an existing .pt file and cannot go with --resume "
                                 f"(got {init_weights}).")

    configure_offline(config_dir)
    import torch
    from ultralytics import YOLO

    dev = resolve_device(device, cuda_available=torch.cuda.is_available())
    if threads is not None:
        import ultralytics.utils.torch_utils as torch_utils

        # select_device() resets torch's CPU threads to this module constant on every train/val.
        torch_utils.NUM_THREADS = threads
        torch.set_num_threads(threads)
    record = read_record(out) if resume else {}
    if resume:
        if _checkpoint_finished(last_pt):
            raise TrainingSetupError(f"The run {out} is finished (last.pt has no optimizer state); nothing to resume.")
        if not record:
            logger.warning("%s has no %s; the recipe in the new record will be incomplete", out, RECORD_NAME)
        logger.info("Resuming %s from %s", out, last_pt)
        model = YOLO(str(last_pt))
        kwargs: dict[str, Any] = {"resume": str(last_pt), "device": dev, "workers": workers}
    else:
        data_yaml = data_yaml.resolve()
        data = check_data_config(_load_yaml(data_yaml), yaml_dir=data_yaml.parent)
        out.mkdir(parents=True, exist_ok=True)
        clean_yaml = out / "data.yaml"
        # JSON is valid YAML; ultralytics reads it with its YAML loader.
        used = {k: data[k] for k in ("path", "train", "val", "test", "nc") if k in data}
        write_json_atomic(clean_yaml, {**used, "names": list(data["names"].values())})  # JSON keys would be str
        record = {
            "model_yaml": model_yaml,
            "imgsz": imgsz,
            "epochs": epochs,
            "batch": batch,
            "seed": seed,
            "time_hours": time_hours,
            "init_weights": str(init_weights) if init_weights is not None else None,
            "activation": activation,
            "relu_layers": relu_layers,
            "distill_from": str(distill_from) if distill_from is not None else None,
            "lr0": lr0,
            "warmup_epochs": warmup_epochs,
            "data": {"yaml": str(data_yaml), "used_yaml": str(clean_yaml), "images": data["images"],
                     "seed": data_seed if data_seed is not None else data["seed"]},
        }
        # From a checkpoint, ultralytics builds the trainer's model from the checkpoint's weights (Model.train).
        if init_weights is not None:
            model = YOLO(str(init_weights), task="detect")
            if activation is not None:
                # Model.train rebuilds the trainer's network from the checkpoint's yaml and loads its weights into it
                model.model.yaml["activation"] = ACTIVATIONS[activation]
            if relu_layers:
                model.model.yaml[RELU_LAYERS_KEY] = relu_layers
        else:
            # from scratch the trainer builds the network from the yaml file named, so the activation goes into a copy
            built = (_yaml_with_activation(model_yaml, activation, out, relu_layers)
                     if activation is not None or relu_layers else model_yaml)
            model = YOLO(str(built), task="detect")
        kwargs = {
            "data": str(clean_yaml),
            "epochs": epochs,
            "imgsz": imgsz,
            "batch": batch,
            "workers": workers,
            "device": dev,
            "project": str(out.parent),
            "name": out.name,
            "exist_ok": True,
            # Model.train drops a checkpoint's weights when pretrained is False: keep them when fine-tuning.
            "pretrained": init_weights is not None,
            "amp": False,
            "seed": seed,
            "deterministic": True,
            "patience": patience,
            "plots": True,
            "verbose": True,
        }
        if time_hours is not None:
            kwargs["time"] = float(time_hours)
        if distill_from is not None:
            kwargs["distill_model"] = str(distill_from)
        kwargs.update(schedule)

    record.update(run_dir=str(out), versions=_versions(), status="running")
    session: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": _device_description(dev),
        "resume": resume,
        "wall_s": 0.0,
        "epochs_done": None,
    }
    record["sessions"] = [*record.get("sessions", []), session]
    t0 = time.perf_counter()

    def save_progress(trainer: Any) -> None:
        # After every checkpoint save, so a killed run keeps its recipe and elapsed time for --resume and the manifest.
        session["wall_s"] = round(time.perf_counter() - t0, 1)
        session["epochs_done"] = int(trainer.epoch) + 1
        record.update(
            epochs_completed=session["epochs_done"],
            epochs_planned=int(trainer.epochs),
            wall_s_total=round(sum(s.get("wall_s") or 0.0 for s in record["sessions"]), 1),
            device=session["device"],
        )
        write_json_atomic(out / RECORD_NAME, record)

    model.add_callback("on_model_save", save_progress)
    write_json_atomic(out / RECORD_NAME, record)
    model.train(trainer=_trainer_class(), **kwargs)
    trainer = model.trainer
    session["wall_s"] = round(time.perf_counter() - t0, 1)
    record.update(
        wall_s_total=round(sum(s.get("wall_s") or 0.0 for s in record["sessions"]), 1),
        metrics=_final_metrics(trainer),
        best=str(out / "weights" / "best.pt"),
        status="finished",
    )
    write_json_atomic(out / RECORD_NAME, record)
    logger.info("Training done: %s", json.dumps(record["metrics"]))
    return record


def schedule_kwargs(lr0: float | None, warmup_epochs: float | None) -> dict[str, Any]:
    """ultralytics train arguments for a chosen learning rate and warm-up ({} when both are None).

    ultralytics' default optimizer ('auto') picks its own learning rate and ignores ``lr0``, so a chosen ``lr0`` comes
    with the optimizer 'auto' picks for runs of this size (AdamW, momentum 0.9) named explicitly. Raises
    TrainingSetupError for ``lr0`` outside (0, 0.1] or ``warmup_epochs`` outside [0, 10].
    """
    out: dict[str, Any] = {}
    if lr0 is not None:
        if not 0.0 < lr0 <= 0.1:
            raise TrainingSetupError(f"--lr0 must be in (0, 0.1], got {lr0}.")
        out.update(optimizer="AdamW", lr0=float(lr0), momentum=0.9)
    if warmup_epochs is not None:
        if not 0.0 <= warmup_epochs <= 10.0:
            raise TrainingSetupError(f"--warmup-epochs must be in [0, 10], got {warmup_epochs}.")
        out["warmup_epochs"] = float(warmup_epochs)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m detection.train", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, help="DIR/data.yaml in YOLO layout (not needed with --resume)")
    p.add_argument("--model", default="yolo11n.yaml", help="ultralytics model yaml (built from scratch)")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=0, help="data loader processes (ultralytics uses 0 on CPU)")
    p.add_argument("--out", type=Path, required=True, help="run folder, e.g. runs/crystal-yolo11n")
    p.add_argument("--resume", action="store_true", help="continue OUT/weights/last.pt")
    p.add_argument("--time-hours", type=float, default=None, help="stop after this many hours (fits the schedule)")
    p.add_argument("--device", default="auto", help="auto (GPU when available), cpu, or a CUDA index")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=100, help="early stop after this many epochs without gain")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: ultralytics' cores - 1)")
    p.add_argument("--data-seed", type=int, default=None, help="generator seed of the data set, recorded only")
    p.add_argument("--init-weights", type=Path, default=None,
                   help="fine-tune: start from this .pt checkpoint instead of from scratch")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default=None,
                   help="rebuild the network with this activation function (default: the model's own); relu runs "
                        "faster in INT8")
    p.add_argument("--distill-from", type=Path, default=None, metavar="TEACHER_PT",
                   help="knowledge distillation from this checkpoint (ultralytics' distill_model)")
    p.add_argument("--lr0", type=float, default=None,
                   help="learning rate (AdamW; default: ultralytics' automatic choice, 0.00167 for two classes)")
    p.add_argument("--warmup-epochs", type=float, default=None,
                   help="learning-rate warm-up (default: ultralytics' 3); 0 to continue from a trained model")
    p.add_argument("--relu-layers", default=None, metavar="SPEC",
                   help="ReLU in these layers only (e.g. 0-8: the backbone), the others keep their activation")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.data is None and not args.resume:
        print("error: --data is required unless --resume", file=sys.stderr)
        return 2
    try:
        record = train(
            args.data or Path("."),
            out=args.out,
            model_yaml=args.model,
            imgsz=args.imgsz,
            epochs=args.epochs,
            batch=args.batch,
            workers=args.workers,
            device=args.device,
            seed=args.seed,
            time_hours=args.time_hours,
            resume=args.resume,
            patience=args.patience,
            threads=args.threads,
            data_seed=args.data_seed,
            init_weights=args.init_weights,
            activation=args.activation,
            relu_layers=parse_layers(args.relu_layers) if args.relu_layers else None,
            distill_from=args.distill_from,
            lr0=args.lr0,
            warmup_epochs=args.warmup_epochs,
        )
    except CrystalQCError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"run": record["run_dir"], "metrics": record["metrics"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
