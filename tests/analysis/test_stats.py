"""Known-answer tests for analysis.stats: counting rule, D-values, summaries, batch pooling, histograms."""
from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.records import ImageMeta, ImageResult, Particle
from analysis.stats import (
    MIN_STABLE_COUNT,
    DValues,
    counted,
    histogram,
    not_counted_reason,
    size_distribution,
    summarize_particles,
    summarize_result,
    summarize_results,
)


def _p(ecd: float, *, pid: int = 1, cls: str = "crystal", border: bool = False, reason: str | None = None) -> Particle:
    area = math.pi * ecd * ecd / 4
    return Particle(
        particle_id=pid, class_name=cls, confidence=0.9, x_min=0, y_min=0, x_max=10, y_max=10,
        area_px=area, perimeter_px=math.pi * ecd, ecd_px=ecd, feret_max_px=ecd, feret_min_px=ecd,
        aspect_ratio=1.0, circularity=1.0, solidity=1.0, focus_score=0.1, on_border=border, excluded_reason=reason,
    )  # fmt: skip


def _result(particles, *, name="a.png", px_um=None, include_border=False, w=1000, h=1000, seconds=0.5):
    meta = ImageMeta(format="png", width=w, height=h, bit_depth=8, channels=1)
    return ImageResult(name, meta, tuple(particles), px_um, include_border, "classical", seconds)


# --- size_distribution ------------------------------------------------------------------------------------------


def test_number_weighted_matches_numpy_percentile():
    ecd = np.random.default_rng(7).lognormal(3.0, 0.4, 333)
    d = size_distribution(ecd)
    d10, d50, d90 = np.percentile(ecd, [10, 50, 90])
    assert (d.d10, d.d50, d.d90) == (d10, d50, d90)
    assert d.span == pytest.approx((d90 - d10) / d50)
    assert d.mean == pytest.approx(ecd.mean())


def test_volume_weighted_all_equal_sizes():
    d = size_distribution(np.full(20, 12.5), weighting="volume")
    assert d.d10 == d.d50 == d.d90 == d.mean == 12.5
    assert d.span == 0.0


def test_volume_weighted_dominant_particle_is_d50():
    ecd = np.array([1.0] * 10 + [10.0] + [2.0] * 5)
    d = size_distribution(ecd, weighting="volume")
    assert d.d50 == 10.0
    assert d.d90 == 10.0
    assert size_distribution(ecd).d50 == 1.0  # number-weighted: the many small ones


def test_volume_weighted_step_cdf_known_case():
    # volumes 1, 8, 27 of 36: cumulative 2.8 %, 25 %, 100 %
    d = size_distribution(np.array([3.0, 1.0, 2.0]), weighting="volume")
    assert (d.d10, d.d50, d.d90) == (2.0, 3.0, 3.0)
    assert d.mean == pytest.approx((1 + 16 + 81) / 36)  # D[4,3]
    assert d.span == pytest.approx(1 / 3)


def test_empty_gives_nan():
    for weighting in ("number", "volume"):
        d = size_distribution(np.array([]), weighting=weighting)
        assert all(math.isnan(v) for v in (d.d10, d.d50, d.d90, d.span, d.mean))


def test_scaled_keeps_span():
    d = DValues(1.0, 2.0, 4.0, 1.5, 2.5).scaled(0.5)
    assert d == DValues(0.5, 1.0, 2.0, 1.5, 1.25)


@pytest.mark.parametrize(
    ("values", "kw", "match"),
    [
        (np.ones(3), {"weighting": "mass"}, "weighting"),
        (np.ones((2, 2)), {}, "1-D"),
        (np.array([1.0, -2.0]), {}, "finite"),
        (np.array([1.0, np.nan]), {}, "finite"),
    ],
)
def test_size_distribution_bad_input_raises(values, kw, match):
    with pytest.raises(ValueError, match=match):
        size_distribution(values, **kw)


# --- counted ---------------------------------------------------------------------------------------------------


def test_counted_border_rule_and_exclusions():
    ps = [_p(5, pid=1), _p(5, pid=2, border=True), _p(5, pid=3, reason="dust")]
    ps.append(_p(5, pid=4, border=True, reason="fibre"))
    assert [p.particle_id for p in counted(ps, include_border=False)] == [1]
    assert [p.particle_id for p in counted(ps, include_border=True)] == [1, 2]
    assert [not_counted_reason(p, include_border=False) for p in ps] == [None, "on_border", "dust", "fibre"]


# --- summarize_particles ---------------------------------------------------------------------------------------


def test_summary_counts_and_fractions():
    ps = [_p(10, cls="crystal")] * 3 + [_p(20, cls="agglomerate")] + [_p(5, reason="dust")] * 2 + [_p(8, border=True)]
    s = summarize_particles(ps)
    assert (s.n_crystals, s.n_agglomerates, s.n_total, s.n_excluded) == (3, 1, 4, 3)
    assert s.excluded_by_reason == {"dust": 2, "on_border": 1}
    assert s.agglomerate_fraction == 0.25
    assert s.agglomerate_volume_fraction == pytest.approx(8000 / (8000 + 3 * 1000))
    assert s.number.d50 == np.percentile([10, 10, 10, 20], 50)
    assert s.number_um is None and s.volume_um is None and s.particles_per_mm2 is None
    with_border = summarize_particles(ps, include_border=True)
    assert (with_border.n_total, with_border.n_excluded) == (5, 2)


def test_summary_calibrated_values_and_density():
    rng = np.random.default_rng(3)
    ecd = rng.uniform(5, 30, 100)
    ps = [_p(float(e), pid=i) for i, e in enumerate(ecd, 1)]
    s = summarize_particles(ps, pixel_size_um=0.5, image_area_px=2000 * 1000)
    assert s.number_um.d50 == pytest.approx(0.5 * np.percentile(ecd, 50))
    assert s.volume_um.d90 == pytest.approx(0.5 * s.volume.d90)
    # 2000 x 1000 px at 0.5 µm/px = 1000 x 500 µm = 0.5 mm²
    assert s.particles_per_mm2 == pytest.approx(100 / 0.5)
    assert s.warnings == ()
    assert s.agglomerate_fraction == 0.0


def test_summary_warnings():
    few = summarize_particles([_p(10, pid=i) for i in range(12)])
    assert few.warnings == (f"only 12 particles counted: D-values are not stable (need >= {MIN_STABLE_COUNT})",)
    none = summarize_particles([_p(10, reason="dust")])
    assert none.warnings == ("no particles counted: no size statistics",)
    assert math.isnan(none.agglomerate_fraction) and math.isnan(none.agglomerate_volume_fraction)
    assert math.isnan(none.number.d50)
    enough = summarize_particles([_p(10, pid=i) for i in range(MIN_STABLE_COUNT)])
    assert enough.warnings == ()
    dominated = summarize_particles([_p(10, pid=i) for i in range(60)] + [_p(100)])
    assert len(dominated.warnings) == 1 and "holds 94 % of the counted volume" in dominated.warnings[0]


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"pixel_size_um": 0.0}, "pixel size"), ({"pixel_size_um": -1.0}, "pixel size"),
     ({"pixel_size_um": math.nan}, "pixel size"), ({"image_area_px": 0.0}, "image_area_px")],
)  # fmt: skip
def test_summary_bad_options_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        summarize_particles([_p(5)], **kw)


def test_summary_counted_unknown_class_raises():
    with pytest.raises(ValueError, match="no excluded_reason"):
        summarize_particles([_p(5, cls="bubble")])
    assert summarize_particles([_p(5, cls="bubble", reason="bubble")]).n_excluded == 1


# --- summarize_results -----------------------------------------------------------------------------------------


def test_batch_pools_same_calibration_like_one_image():
    a = [_p(float(e), pid=i) for i, e in enumerate(range(5, 40), 1)]
    b = [_p(float(e), pid=i, cls="agglomerate") for i, e in enumerate(range(20, 60, 3), 1)] + [_p(3, border=True)]
    batch = summarize_results([_result(a, px_um=2.0), _result(b, px_um=2.0, name="b.png")])
    pooled = summarize_particles(a + b, pixel_size_um=2.0, image_area_px=2 * 1000 * 1000)
    assert batch == pooled


def test_batch_pools_in_um_when_calibrations_differ():
    a = [_p(10.0, pid=i) for i in range(30)]
    b = [_p(10.0, pid=i) for i in range(30)]
    batch = summarize_results([_result(a, px_um=1.0), _result(b, px_um=3.0, include_border=True)])
    expected = np.percentile(np.r_[np.full(30, 10.0), np.full(30, 30.0)], [10, 50, 90])
    assert [batch.number_um.d10, batch.number_um.d50, batch.number_um.d90] == pytest.approx(expected)
    assert batch.number.d50 == 10.0  # pixels pooled raw
    assert any("pixel sizes differ" in w for w in batch.warnings)
    # 1 mm² at 1 µm/px plus 9 mm² at 3 µm/px
    assert batch.particles_per_mm2 == pytest.approx(60 / 10)


def test_batch_with_an_uncalibrated_image_has_no_um():
    a = [_p(10.0, pid=i) for i in range(30)]
    batch = summarize_results([_result(a, px_um=1.0), _result(a)])
    assert batch.number_um is None and batch.volume_um is None and batch.particles_per_mm2 is None
    assert batch.n_total == 60
    assert "1 of 2 images have no pixel size: batch values are in pixels only" in batch.warnings


def test_summary_unit_and_dvalues_follow_the_calibration():
    ps = [_p(10.0, pid=1), _p(20.0, pid=2), _p(30.0, pid=3)]
    px = summarize_particles(ps)
    um = summarize_particles(ps, pixel_size_um=0.5)
    assert (px.unit, um.unit) == ("px", "µm")
    assert px.dvalues() == px.number and px.dvalues("volume") == px.volume
    assert um.dvalues() == um.number_um and um.dvalues("volume") == um.volume_um
    assert um.dvalues().d50 == pytest.approx(10.0)  # 20 px * 0.5 µm/px
    mixed = summarize_results([_result(ps, px_um=0.5), _result(ps)])
    assert mixed.unit == "px" and mixed.dvalues() == mixed.number
    with pytest.raises(ValueError, match="weighting"):
        um.dvalues("area")


def test_summarize_result_uses_the_image_calibration_border_rule_and_area():
    ps = [_p(10.0, pid=1), _p(20.0, pid=2, border=True)]
    s = summarize_result(_result(ps, px_um=2.0, include_border=False, w=500, h=250))
    assert (s.n_total, s.excluded_by_reason) == (1, {"on_border": 1})
    assert s.number_um.d50 == pytest.approx(20.0)
    assert s.particles_per_mm2 == pytest.approx(1 / (500 * 250 * 4.0 * 1e-6))  # 1 crystal in 0.5 mm²


def test_batch_respects_each_image_border_rule():
    ps = [_p(10.0), _p(12.0, border=True)]
    batch = summarize_results([_result(ps, include_border=False), _result(ps, include_border=True)])
    assert (batch.n_total, batch.n_excluded, batch.excluded_by_reason) == (3, 1, {"on_border": 1})


def test_batch_empty():
    batch = summarize_results([])
    assert batch.n_total == 0 and batch.number_um is None and math.isnan(batch.number.d50)


# --- histogram -------------------------------------------------------------------------------------------------


def test_histogram_linear_number():
    edges, frac = histogram(np.array([1.0, 2.0, 2.0, 3.0]), bins=2, range_=(0.0, 4.0))
    assert np.allclose(edges, [0, 2, 4])
    assert np.allclose(frac, [25.0, 75.0])


def test_histogram_log_volume_and_fractions_sum():
    values = np.random.default_rng(1).lognormal(2, 0.5, 500)
    edges, frac = histogram(values, bins=20, log=True, weighting="volume")
    ratios = edges[1:] / edges[:-1]
    assert np.allclose(ratios, ratios[0])
    assert frac.sum() == pytest.approx(100.0)
    _, frac_vol = histogram(np.array([1.0, 2.0]), bins=2, weighting="volume", range_=(0.5, 2.5))
    assert np.allclose(frac_vol, [100 / 9, 800 / 9])


def test_histogram_range_cut_is_relative_to_all_values():
    _, frac = histogram(np.array([1.0, 2.0, 10.0, 20.0]), bins=1, range_=(0.0, 5.0))
    assert frac.tolist() == [50.0]


def test_histogram_degenerate_inputs():
    edges, frac = histogram(np.array([]), bins=4)
    assert edges.shape == (5,) and not frac.any()
    edges, frac = histogram(np.array([3.0, 3.0]), bins=3, log=True)
    assert edges[0] < 3.0 < edges[-1] and frac.sum() == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("values", "kw", "match"),
    [
        (np.array([1.0]), {"bins": 0}, "bins"),
        (np.array([1.0]), {"bins": 2.5}, "bins"),
        (np.array([0.0, 1.0]), {"log": True}, "sizes > 0"),
        (np.array([1.0]), {"log": True, "range_": (0.0, 2.0)}, "range_ > 0"),
        (np.array([1.0]), {"range_": (2.0, 1.0)}, "low < high"),
        (np.array([1.0]), {"weighting": "area"}, "weighting"),
    ],
)
def test_histogram_bad_input_raises(values, kw, match):
    with pytest.raises(ValueError, match=match):
        histogram(values, **kw)
