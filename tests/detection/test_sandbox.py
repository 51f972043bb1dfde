"""First inference in a limited child process (detection.sandbox): real bombs, the test process must survive."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import detection.sandbox as sb
from analysis.errors import ModelPackageError
from detection.sandbox import SandboxReport, run_first_inference
from tests.detection.onnx_fixtures import band_model, finish_model

_FLOAT_ONE = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])


def _io(out_shape=(1, 3, 64, 64)):
    """([input], [output]) value infos: a (1, 3, 64, 64) image in, ``out_shape`` out."""
    return ([helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
            [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(out_shape))])


def terabyte_bomb() -> bytes:
    """ConstantOfShape of a constant (1e6, 1e6) shape: 4 TB of float32."""
    inits = [numpy_helper.from_array(np.array([1_000_000, 1_000_000], np.int64), "shp")]
    nodes = [helper.make_node("ConstantOfShape", ["shp"], ["big"], value=_FLOAT_ONE),
             helper.make_node("ReduceMax", ["big"], ["m"], keepdims=0),
             helper.make_node("Mul", ["images", "m"], ["output0"])]
    return finish_model(nodes, inits, *_io(), None)


def run_time_bomb(factor: int) -> bytes:
    """ConstantOfShape of Shape(images) * (1, 1, factor, factor): the size is only known at run time."""
    inits = [numpy_helper.from_array(np.array([1, 1, factor, factor], np.int64), "bomb_k")]
    nodes = [helper.make_node("Shape", ["images"], ["bomb_s"]),
             helper.make_node("Mul", ["bomb_s", "bomb_k"], ["bomb_shape"]),
             helper.make_node("ConstantOfShape", ["bomb_shape"], ["bomb_big"], value=_FLOAT_ONE),
             helper.make_node("ReduceMax", ["bomb_big"], ["bomb_max"], keepdims=0),
             helper.make_node("Mul", ["images", "bomb_max"], ["output0"])]
    return finish_model(nodes, inits, *_io(), None)


def endless_loop() -> bytes:
    """A Loop with 10^15 iterations that keeps adding 1: never finishes."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["acc_in", "one"], ["acc_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1])],
        initializer=[numpy_helper.from_array(np.ones(1, np.float32), "one")],
    )
    inits = [numpy_helper.from_array(np.array(10**15, np.int64), "trips"),
             numpy_helper.from_array(np.array(True), "cond"),
             numpy_helper.from_array(np.zeros(1, np.float32), "acc0")]
    nodes = [helper.make_node("ReduceMax", ["images"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "acc0"], ["acc_start"]),
             helper.make_node("Loop", ["trips", "cond", "acc_start"], ["acc"], body=body),
             helper.make_node("Mul", ["images", "acc"], ["output0"])]
    return finish_model(nodes, inits, *_io(), None)


def test_good_model_runs_and_reports():
    report = run_first_inference(band_model(), timeout_s=60)
    assert isinstance(report, SandboxReport)
    assert report.input_shape == (1, 3, 64, 64)
    assert report.output_shapes == ((1, 7, 84),)
    assert report.outputs_finite
    assert report.load_s >= 0 and report.blank_s >= 0 and report.random_s >= 0
    assert 0 < report.peak_rss_mb < 2048


def test_terabyte_allocation_is_stopped_and_the_caller_survives():
    pid = os.getpid()
    with pytest.raises(ModelPackageError, match="memory limit|killed|crashed"):
        run_first_inference(terabyte_bomb(), timeout_s=60, memory_mb=1024)
    assert os.getpid() == pid
    assert run_first_inference(band_model()).output_shapes == ((1, 7, 84),)  # still fully working


def test_allocation_the_machine_could_serve_is_stopped_by_the_address_space_limit():
    # 3 * 11520 * 11520 float32 = 1.6 GB: a plain process would get it; the 768 MiB sandbox must not.
    with pytest.raises(ModelPackageError, match="memory limit"):
        run_first_inference(run_time_bomb(180), timeout_s=60, memory_mb=768)


def test_endless_graph_is_killed_at_the_wall_time_limit():
    with pytest.raises(ModelPackageError, match=r"time limit \(2 s\)"):
        run_first_inference(endless_loop(), timeout_s=2)


def test_cpu_limit_stops_the_child_even_without_the_parent(monkeypatch):
    # Pretend the wall clock never fires (30 s) and make the CPU limit 1 s: the kernel must stop the child.
    monkeypatch.setattr(sb, "CPU_MARGIN_S", -29)
    with pytest.raises(ModelPackageError, match=r"killed \(SIGXCPU\): CPU time limit"):
        run_first_inference(endless_loop(), timeout_s=30)


def test_a_crashing_child_is_reported_as_a_crash(monkeypatch):
    monkeypatch.setattr(sb, "_BOOTSTRAP", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(ModelPackageError, match="crashed .*SIGSEGV"):
        run_first_inference(band_model())


def test_child_sees_no_secrets_from_the_environment(monkeypatch):
    monkeypatch.setenv("CRYSTALQC_PASSPHRASE", "do-not-leak")
    monkeypatch.setattr(sb, "_BOOTSTRAP", "import os, json; print(json.dumps({'error': 'run', 'detail': "
                                          "' '.join(sorted(os.environ))}))")
    with pytest.raises(ModelPackageError) as info:
        run_first_inference(band_model())
    assert "CRYSTALQC_PASSPHRASE" not in str(info.value) and "PATH" in str(info.value)


def test_unreadable_report_is_refused(monkeypatch):
    monkeypatch.setattr(sb, "_BOOTSTRAP", "print('not json')")
    with pytest.raises(ModelPackageError, match="unreadable report"):
        run_first_inference(band_model())


def test_model_failing_the_checker_is_reported():
    nodes = [helper.make_node("Add", ["images", "undefined_tensor"], ["output0"])]
    with pytest.raises(ModelPackageError, match="ONNX checker"):
        run_first_inference(_unchecked_model(nodes), timeout_s=60)


def _unchecked_model(nodes) -> bytes:
    graph = helper.make_graph(nodes, "g", *_io())
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


def test_garbage_bytes_are_reported_not_raised():
    with pytest.raises(ModelPackageError, match="ONNX checker"):
        run_first_inference(b"\x08\x07garbage" * 10)


def test_model_failing_at_run_time_is_reported():
    # Reshape to a shape with the wrong element count passes the checker and fails only when run.
    inits = [numpy_helper.from_array(np.array([1, 5, 7], np.int64), "shp")]
    nodes = [helper.make_node("Reshape", ["images", "shp"], ["output0"])]
    model = finish_model(nodes, inits, *_io((1, 5, 7)), None)
    with pytest.raises(ModelPackageError, match="fails to run|cannot be loaded"):
        run_first_inference(model)


def test_platform_without_resource_limits_is_refused(monkeypatch):
    assert sb.sandbox_available()  # the development and CI machines are Linux
    monkeypatch.setattr(sb, "sandbox_available", lambda: False)
    with pytest.raises(ModelPackageError, match="operating system"):
        run_first_inference(band_model())


def test_bad_arguments():
    with pytest.raises(ValueError):
        run_first_inference(band_model(), timeout_s=0)
    with pytest.raises(ValueError):
        run_first_inference(band_model(), memory_mb=-1)
    with pytest.raises(ModelPackageError, match="empty"):
        run_first_inference(b"")


def test_signal_names():
    assert sb._signal_name(int(signal.SIGSEGV)) == "SIGSEGV"
    assert sb._signal_name(250) == "signal 250"
    assert sb._clean("a\x1b[31mred\nline" + "x" * 500).startswith("a?[31mred line")
