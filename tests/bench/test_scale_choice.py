"""bench/scale_choice.py: the per-image rule that would let the model's confidence pick a coarser scale."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

_SPEC = importlib.util.spec_from_file_location("bench_scale_choice",
                                               Path(__file__).resolve().parents[2] / "bench" / "scale_choice.py")
scale_choice = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = scale_choice  # dataclasses look their module up there
_SPEC.loader.exec_module(scale_choice)


def _pass(total: float, ecd: float = 60.0):
    return scale_choice.Pass(boxes=np.zeros((0, 4)), confidence_sum=total, median_ecd_px=ecd)


@pytest.mark.parametrize("coarse,expected", [(13.0, 1.0), (13.6, 0.667), (20.0, 0.667)])
def test_the_coarser_pass_is_taken_only_above_the_margin_and_slack(coarse, expected):
    # bar = 1.3 * 10 + 0.5 = 13.5
    passes = {1.0: _pass(10.0), 0.667: _pass(coarse)}
    assert scale_choice.rule_choice(passes, margin=0.3, min_ecd_px=45) == expected


def test_small_crystals_keep_the_image_scale_however_confident_the_coarse_pass():
    passes = {1.0: _pass(10.0, ecd=44.9), 0.5: _pass(100.0)}
    assert scale_choice.rule_choice(passes, margin=0.3, min_ecd_px=45) == 1.0


def test_of_several_passing_scales_the_most_confident_wins():
    passes = {1.0: _pass(10.0), 0.667: _pass(18.0), 0.5: _pass(16.0)}
    assert scale_choice.rule_choice(passes, margin=0.3, min_ecd_px=45) == 0.667
    passes[0.5] = _pass(19.0)
    assert scale_choice.rule_choice(passes, margin=0.3, min_ecd_px=45) == 0.5
