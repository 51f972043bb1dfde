"""Training/export code without torch: import rules, bundled font, requirements, and the pure helpers.

detection.train and detection.export import torch/ultralytics only inside functions, so their helpers are tested
here in the runtime venv. The real training/export runs are documented in docs/training.md (too slow for tests).
"""
from __future__ import annotations

import ast
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.errors import CrystalQCError, ModelPackageError
from detection import export as ex
from detection import train as tr

ROOT = Path(__file__).resolve().parents[2]
TRAINING_MODULES = tuple(ROOT / "detection" / name for name in ("train.py", "export.py", "train_soup.py"))
HEAVY = {"torch", "torchvision", "ultralytics", "onnxruntime", "onnx", "numpy", "yaml", "cv2"}


def _module_level_import_roots(path: Path) -> set[str]:
    """Roots imported at module level (not inside a function), including under if/try at module level."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots: set[str] = set()
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
        stack.extend(ast.iter_child_nodes(node))
    return roots


def _imports_anywhere(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module)
            roots.update(f"{node.module}.{a.name}" for a in node.names)
    return roots


# --- import rules -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", TRAINING_MODULES, ids=lambda p: p.name)
def test_training_modules_import_heavy_packages_only_inside_functions(path):
    assert not _module_level_import_roots(path) & HEAVY
    assert _imports_anywhere(path) & {"ultralytics", "torch", "detection.train"}  # the checker sees them at all


def test_module_level_checker_ignores_function_bodies(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\ntry:\n    import torch\nexcept ImportError:\n    pass\ndef f():\n    import cv2\n")
    assert _module_level_import_roots(probe) == {"os", "torch"}


def _runtime_sources() -> list[Path]:
    files = [p for pkg in ("analysis", "detection", "vault", "ui", "pages") for p in (ROOT / pkg).rglob("*.py")]
    files += [p for p in [ROOT / "app.py"] if p.exists()]
    return sorted(p for p in files if p not in TRAINING_MODULES)


def test_import_checker_sees_both_spellings_of_a_training_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from detection import train\ndef f():\n    import detection.export\n")
    assert {"detection.train", "detection.export"} <= _imports_anywhere(probe)


def test_runtime_code_never_imports_the_training_modules():
    offenders = [
        str(p.relative_to(ROOT))
        for p in _runtime_sources()
        if {"detection.train", "detection.export"} & _imports_anywhere(p)
    ]
    assert len(_runtime_sources()) >= 5
    assert offenders == []


# --- bundled font and requirements -----------------------------------------------------------------------------------
def test_bundled_font_is_a_truetype_file_with_its_licence():
    data = tr.FONT_FILE.read_bytes()
    assert data[:4] == b"\x00\x01\x00\x00" and len(data) > 100_000
    licence = (tr.FONT_FILE.parent / "LICENSE.txt").read_text(encoding="utf-8")
    assert "Bitstream" in licence and "Permission is hereby granted" in licence


def _requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(line.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower())
    return names


def test_runtime_requirements_stay_free_of_training_packages():
    for name in ("requirements.txt", "requirements-dev.txt"):
        assert not _requirement_names(ROOT / name) & {"torch", "torchvision", "ultralytics"}, name


def test_training_requirements_pin_a_matching_torch_pair():
    text = (ROOT / "requirements-train.txt").read_text(encoding="utf-8")
    assert "torch==2.14.1" in text and "torchvision==0.29.1" in text
    names = _requirement_names(ROOT / "requirements-train.txt")
    assert {"ultralytics", "onnx", "onnxruntime"} <= names
    assert "opencv-python-headless" not in names  # clashes with ultralytics' opencv-python (same cv2 module)


# --- detection.train helpers ------------------------------------------------------------------------------------------
def _dataset(root: Path, *, n_train: int = 3, n_val: int = 2) -> Path:
    for split, n in (("train", n_train), ("val", n_val), ("test", 0)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            (root / "images" / split / f"im{i}.png").write_bytes(b"")
    (root / "images" / "train" / "notes.txt").write_text("not an image")
    return root


def _raw(**over):
    raw = {"path": ".", "train": "images/train", "val": "images/val", "test": "images/test", "seed": 7,
           "names": {0: "crystal", 1: "agglomerate"}}
    raw.update(over)
    return raw


def test_check_data_config_resolves_paths_against_the_yaml_folder(tmp_path, monkeypatch):
    root = _dataset(tmp_path / "ds")
    monkeypatch.chdir(tmp_path)  # ultralytics would resolve 'path: .' here; we must not
    clean = tr.check_data_config(_raw(), yaml_dir=root)
    assert clean["path"] == str(root.resolve())
    assert clean["train"] == str((root / "images" / "train").resolve())
    assert clean["images"] == {"train": 3, "val": 2, "test": 0}
    assert clean["names"] == {0: "crystal", 1: "agglomerate"} and clean["nc"] == 2 and clean["seed"] == 7


def test_check_data_config_accepts_a_name_list_and_absolute_root(tmp_path):
    root = _dataset(tmp_path / "ds")
    clean = tr.check_data_config(_raw(path=str(root), names=["crystal", "agglomerate"], seed=None), yaml_dir=tmp_path)
    assert clean["path"] == str(root.resolve()) and clean["seed"] is None


def test_check_data_config_accepts_the_mimic_class_last_and_nothing_else(tmp_path):
    root = _dataset(tmp_path / "ds")
    clean = tr.check_data_config(_raw(names=["crystal", "agglomerate", "mimic"]), yaml_dir=root)
    assert clean["names"] == {0: "crystal", 1: "agglomerate", 2: "mimic"} and clean["nc"] == 3
    for names in (["crystal", "agglomerate", "bubble"], ["mimic", "crystal", "agglomerate"]):
        with pytest.raises(tr.TrainingSetupError, match="names are"):
            tr.check_data_config(_raw(names=names), yaml_dir=root)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"download": "import os"}, "download"),
        ({"names": {0: "crystal"}}, "names are"),
        ({"names": {1: "crystal", 2: "agglomerate"}}, "class ids"),
        ({"names": None}, "lacks 'names'"),
        ({"nc": 3}, "nc=3"),
        ({"val": None}, "lacks 'val:'"),
        ({"train": ["a", "b"]}, "one folder"),
        ({"train": "images/missing"}, "does not exist"),
        ({"val": "images/test"}, "holds no images"),
    ],
)
def test_check_data_config_refuses_bad_configs(tmp_path, over, message):
    root = _dataset(tmp_path / "ds")
    with pytest.raises(tr.TrainingSetupError, match=message):
        tr.check_data_config(_raw(**over), yaml_dir=root)


def test_check_data_config_refuses_a_non_mapping(tmp_path):
    with pytest.raises(tr.TrainingSetupError, match="mapping"):
        tr.check_data_config(["train"], yaml_dir=tmp_path)  # type: ignore[arg-type]


def test_training_setup_error_is_a_product_error():
    assert issubclass(tr.TrainingSetupError, CrystalQCError)


@pytest.mark.parametrize(
    ("requested", "cuda", "expected"),
    [("auto", True, "0"), ("auto", False, "cpu"), ("CPU", True, "cpu"), ("1", True, "1"), ("cuda:0", True, "0")],
)
def test_resolve_device(requested, cuda, expected):
    assert tr.resolve_device(requested, cuda_available=cuda) == expected


@pytest.mark.parametrize(("requested", "message"), [("0", "no CUDA"), ("tpu", "must be auto")])
def test_resolve_device_refuses(requested, message):
    with pytest.raises(tr.TrainingSetupError, match=message):
        tr.resolve_device(requested, cuda_available=False)


def test_metrics_from_results_renames_and_never_invents():
    got = tr.metrics_from_results({"metrics/mAP50(B)": 0.912345678, "metrics/recall(B)": 0.5, "fitness": 1.0})
    assert got == {"recall": 0.5, "mAP50": 0.91235}


def test_count_images_counts_image_suffixes_only(tmp_path):
    _dataset(tmp_path / "ds", n_train=4)
    assert tr.count_images(tmp_path / "ds" / "images" / "train") == 4
    assert tr.count_images(tmp_path / "nowhere") == 0


def test_record_round_trip_and_errors(tmp_path):
    assert tr.read_record(tmp_path) == {}
    tr.write_json_atomic(tmp_path / tr.RECORD_NAME, {"epochs": 3})
    assert tr.read_record(tmp_path) == {"epochs": 3}
    assert not list(tmp_path.glob("*.tmp"))
    (tmp_path / tr.RECORD_NAME).write_text("{broken")
    with pytest.raises(tr.TrainingSetupError, match="unreadable"):
        tr.read_record(tmp_path)
    (tmp_path / tr.RECORD_NAME).write_text("[1, 2]")
    with pytest.raises(tr.TrainingSetupError, match="not a JSON object"):
        tr.read_record(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"imgsz": 650}, "multiple of 32"),
        ({"epochs": 0}, "at least 1"),
        ({"threads": 0}, "at least 1"),
        ({"resume": True}, "no checkpoint"),
        ({"activation": "gelu"}, "--activation must be one of"),
        ({"relu_layers": [0, 1], "activation": "relu"}, "--relu-layers cannot go with"),
        ({"relu_layers": []}, "needs at least one layer"),
        ({"distill_from": Path("/nonexistent/teacher.pt")}, "--distill-from must name an existing"),
        ({"lr0": 0.0}, "--lr0 must be in"),
        ({"lr0": 0.5}, "--lr0 must be in"),
        ({"warmup_epochs": -1.0}, "--warmup-epochs must be in"),
    ],
)
def test_train_refuses_bad_options_before_importing_ultralytics(tmp_path, kwargs, message):
    with pytest.raises(tr.TrainingSetupError, match=message):
        tr.train(tmp_path / "data.yaml", out=tmp_path / "run", config_dir=tmp_path / ".yolo", **kwargs)
    assert "ultralytics" not in sys.modules


def test_train_refuses_a_new_activation_for_a_resumed_run(tmp_path):
    """A resumed run keeps the network it started with; switching its activation would not resume it."""
    (tmp_path / "run" / "weights").mkdir(parents=True)
    (tmp_path / "run" / "weights" / "last.pt").write_bytes(b"x")
    with pytest.raises(tr.TrainingSetupError, match="cannot go with --resume"):
        tr.train(tmp_path / "data.yaml", out=tmp_path / "run", config_dir=tmp_path / ".yolo", resume=True,
                 activation="relu")
    assert "ultralytics" not in sys.modules


def test_train_refuses_a_new_schedule_for_a_resumed_run(tmp_path):
    (tmp_path / "run" / "weights").mkdir(parents=True)
    (tmp_path / "run" / "weights" / "last.pt").write_bytes(b"x")
    with pytest.raises(tr.TrainingSetupError, match="--lr0 and --warmup-epochs cannot go with --resume"):
        tr.train(tmp_path / "data.yaml", out=tmp_path / "run", config_dir=tmp_path / ".yolo", resume=True, lr0=1e-4)
    assert "ultralytics" not in sys.modules


def test_schedule_kwargs_name_the_optimizer_with_a_learning_rate():
    """'auto' would ignore lr0: a chosen rate comes with AdamW named; the warm-up alone changes nothing else."""
    assert tr.schedule_kwargs(None, None) == {}
    assert tr.schedule_kwargs(4e-4, None) == {"optimizer": "AdamW", "lr0": 4e-4, "momentum": 0.9}
    assert tr.schedule_kwargs(None, 0) == {"warmup_epochs": 0.0}
    assert tr.schedule_kwargs(1e-3, 0.5) == {"optimizer": "AdamW", "lr0": 1e-3, "momentum": 0.9, "warmup_epochs": 0.5}
    args = tr.build_parser().parse_args(["--out", "x", "--lr0", "0.0004", "--warmup-epochs", "0"])
    assert (args.lr0, args.warmup_epochs) == (0.0004, 0.0)


def test_activation_choices_are_model_yaml_entries():
    assert tr.ACTIVATIONS == {"silu": "nn.SiLU()", "relu": "nn.ReLU()"}
    assert tr.build_parser().parse_args(["--out", "x", "--activation", "relu"]).activation == "relu"
    with pytest.raises(SystemExit):
        tr.build_parser().parse_args(["--out", "x", "--activation", "gelu"])


@pytest.mark.parametrize(("spec", "layers"), [("0-4", [0, 1, 2, 3, 4]), ("0-2,23", [0, 1, 2, 23]), ("5", [5]),
                                              (" 3-4 , 1", [1, 3, 4])])
def test_parse_layers(spec, layers):
    assert tr.parse_layers(spec) == layers
    assert tr.build_parser().parse_args(["--out", "x", "--relu-layers", spec]).relu_layers == spec


@pytest.mark.parametrize("spec", ["", "a-b", "4-2", "-1", "0-4;23", "1-2-3"])
def test_parse_layers_refuses(spec):
    with pytest.raises(tr.TrainingSetupError, match="--relu-layers"):
        tr.parse_layers(spec)


def test_cli_reports_bad_relu_layers(tmp_path, capsys):
    assert tr.main(["--data", str(tmp_path / "d.yaml"), "--out", str(tmp_path / "r"), "--relu-layers", "x"]) == 2
    assert "--relu-layers" in capsys.readouterr().err


def test_train_refuses_to_overwrite_a_run(tmp_path):
    (tmp_path / "run" / "weights").mkdir(parents=True)
    (tmp_path / "run" / "weights" / "last.pt").write_bytes(b"x")
    with pytest.raises(tr.TrainingSetupError, match="already holds a run"):
        tr.train(tmp_path / "data.yaml", out=tmp_path / "run", config_dir=tmp_path / ".yolo")


def test_cli_requires_data_without_resume(capsys):
    assert tr.main(["--out", "runs/x"]) == 2
    assert "--data is required" in capsys.readouterr().err


# --- detection.export helpers -----------------------------------------------------------------------------------------
def test_anchor_count_known_answers():
    assert ex.anchor_count(640) == 80 * 80 + 40 * 40 + 20 * 20 == 8400
    assert ex.anchor_count(320) == 2100


def test_sha256_file(tmp_path):
    f = tmp_path / "m.bin"
    f.write_bytes(b"crystal" * 300_000)
    assert ex.sha256_file(f) == hashlib.sha256(b"crystal" * 300_000).hexdigest()


@pytest.mark.parametrize(("name", "version"), [("Crystal", "1.0.0"), ("a b", "1.0.0"), ("ok", "1.0"), ("ok", "v1.0.0")])
def test_check_package_args_refuses(name, version):
    with pytest.raises(ModelPackageError):
        ex.check_package_args(name, version)


def test_check_package_args_accepts():
    ex.check_package_args("crystal-yolo11n", "1.0.0")


def test_build_manifest_known_shapes():
    m = ex.build_manifest(name="crystal-yolo11n", version="1.0.0", classes=("crystal", "agglomerate"), imgsz=640,
                          stride=32, opset=17, ir_version=8, sha256="ab" * 32, size_bytes=10, recipe={"epochs": 1},
                          metrics={"mAP50": 0.5})
    assert m["input_size"] == [640, 640] and m["classes"] == ["crystal", "agglomerate"]
    assert m["output"]["shape"] == ["batch", 6, 8400] and m["input"]["shape"] == ["batch", 3, 640, 640]
    assert m["file"] == "model.onnx" and m["training"] == {"epochs": 1} and m["metrics"] == {"mAP50": 0.5}
    json.dumps(m)  # serialisable


def test_recipe_prefers_the_record_and_falls_back_to_the_checkpoint():
    ckpt = {"train_args": {"model": "yolo11n.yaml", "imgsz": 640, "epochs": 30, "batch": 16, "seed": 0},
            "version": "8.4.190"}
    recipe, metrics = ex.recipe_from({}, ckpt)
    assert recipe["imgsz"] == 640 and recipe["epochs_planned"] == 30 and recipe["record_found"] is False
    assert recipe["data_seed"] is None and metrics == {}
    record = {"imgsz": 320, "epochs_planned": 5, "data": {"seed": 11, "images": {"train": 9}},
              "metrics": {"mAP50": 0.8}, "wall_s_total": 12.5}
    recipe, metrics = ex.recipe_from(record, ckpt)
    assert (recipe["imgsz"], recipe["epochs_planned"], recipe["data_seed"], recipe["wall_s"]) == (320, 5, 11, 12.5)
    assert recipe["images"] == {"train": 9} and metrics == {"mAP50": 0.8} and recipe["record_found"] is True
    assert recipe["activation"] is None  # no network in the checkpoint to ask


class _Net:
    def __init__(self, yaml):
        self.yaml = yaml


def test_recipe_names_the_activation_the_checkpoints_network_was_built_with():
    relu = ex.recipe_from({}, {"model": _Net({"nc": 2, "activation": "nn.ReLU()"})})[0]
    silu = ex.recipe_from({}, {"model": _Net({"nc": 2})})[0]  # yolo11n.yaml has no entry: ultralytics' default
    assert (relu["activation"], silu["activation"]) == ("nn.ReLU()", "nn.SiLU()")
    assert silu["relu_layers"] is None
    part = ex.recipe_from({}, {"model": _Net({"nc": 2, tr.RELU_LAYERS_KEY: [0, 1, 2]})})[0]
    assert (part["activation"], part["relu_layers"]) == ("nn.SiLU()", [0, 1, 2])


def _toy_onnx(n_inputs: int = 1):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info(f"images{i or ''}", TensorProto.FLOAT, ["b", 3, "h", "w"])
              for i in range(n_inputs)]
    output = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["b", "c", "n"])
    node = helper.make_node("Flatten", ["images"], ["flat"], axis=2)
    node2 = helper.make_node("Identity", ["flat"], ["output0"])
    graph = helper.make_graph([node, node2], "toy", inputs, [output])
    return onnx, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fix_spatial_dims_sets_batch_dynamic_and_the_rest_fixed():
    _, model = _toy_onnx()
    ex.fix_spatial_dims(model, imgsz=320, n_outputs=6)
    dims = [(d.dim_param or d.dim_value) for d in model.graph.input[0].type.tensor_type.shape.dim]
    out = [(d.dim_param or d.dim_value) for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 320, 320] and out == ["batch", 6, 2100]


def test_fix_spatial_dims_refuses_two_inputs():
    _, model = _toy_onnx(n_inputs=2)
    with pytest.raises(ModelPackageError, match="more than one input"):
        ex.fix_spatial_dims(model, imgsz=320, n_outputs=6)


def test_export_refuses_bad_arguments_before_importing_ultralytics(tmp_path):
    with pytest.raises(ModelPackageError, match="--version"):
        ex.export(tmp_path / "best.pt", out_dir=tmp_path / "pkg", name="ok", version="1")
    with pytest.raises(ModelPackageError, match="opset"):
        ex.export(tmp_path / "best.pt", out_dir=tmp_path / "pkg", name="ok", version="1.0.0", opset=18)
    with pytest.raises(ModelPackageError, match="No checkpoint"):
        ex.export(tmp_path / "best.pt", out_dir=tmp_path / "pkg", name="ok", version="1.0.0")
    (tmp_path / "best.pt").write_bytes(b"x")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "model.onnx").write_bytes(b"x")
    with pytest.raises(ModelPackageError, match="--force"):
        ex.export(tmp_path / "best.pt", out_dir=tmp_path / "pkg", name="ok", version="1.0.0")
    assert "ultralytics" not in sys.modules


# --- shipped packages ---------------------------------------------------------------------------------------------
SHIPPED = sorted((ROOT / "weights").glob("*.cqcpkg"))


def test_a_model_is_shipped():
    assert SHIPPED, "weights/ must hold the signed shipped model package"


@pytest.mark.parametrize("package_path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_package_matches_its_manifest_and_runs(package_path):
    import hashlib

    from detection.ort import ort
    from detection.package import unpack

    contents = unpack(package_path.read_bytes())
    manifest = json.loads(contents.manifest_bytes)
    assert hashlib.sha256(contents.model_bytes).hexdigest() == manifest["sha256"]
    assert manifest["opset"] <= ex.MAX_OPSET and manifest["ir_version"] <= ex.MAX_IR_VERSION
    session = ort.InferenceSession(contents.model_bytes, providers=["CPUExecutionProvider"])
    h, w = manifest["input_size"]
    y = session.run(None, {session.get_inputs()[0].name: np.zeros((2, 3, h, w), np.float32)})[0]
    assert y.shape == (2, 4 + len(manifest["classes"]), ex.anchor_count(h))


def test_init_weights_must_exist_and_cannot_resume(tmp_path):
    # Checked before torch/ultralytics are imported, so this runs in the app's environment.
    data = _dataset(tmp_path / "ds") / "data.yaml"
    with pytest.raises(tr.TrainingSetupError, match="init-weights"):
        tr.train(data, out=tmp_path / "run", init_weights=tmp_path / "missing.pt")
    (tmp_path / "w.pt").write_bytes(b"x")
    (tmp_path / "run2" / "weights").mkdir(parents=True)
    (tmp_path / "run2" / "weights" / "last.pt").write_bytes(b"x")
    with pytest.raises(tr.TrainingSetupError, match="init-weights"):
        tr.train(data, out=tmp_path / "run2", resume=True, init_weights=tmp_path / "w.pt")
