"""detection.train_soup.blend_states: the weight interpolation of a model soup (numpy only, no torch)."""
import numpy as np
import pytest

from analysis.errors import CrystalQCError
from detection.train_soup import blend_states


def _state(scale: float) -> dict:
    return {
        "conv.weight": np.full((2, 3), scale, np.float32),
        "bn.running_var": np.array([scale, 2 * scale], np.float16),
        "bn.num_batches_tracked": np.array(int(10 * scale), np.int64),
    }


def test_blend_is_linear_in_alpha_for_float_entries():
    base, tuned = _state(1.0), _state(3.0)
    for alpha, want in ((0.0, 1.0), (0.25, 1.5), (0.5, 2.0), (1.0, 3.0)):
        mixed = blend_states(base, tuned, alpha)
        np.testing.assert_allclose(mixed["conv.weight"], np.full((2, 3), want))
        np.testing.assert_allclose(mixed["bn.running_var"], [want, 2 * want])
        assert mixed["conv.weight"].dtype == np.float32  # half-precision entries are promoted


def test_integer_buffers_come_from_the_tuned_model():
    mixed = blend_states(_state(1.0), _state(3.0), 0.5)
    assert mixed["bn.num_batches_tracked"] == 30


def test_different_architectures_are_refused():
    base, tuned = _state(1.0), _state(2.0)
    tuned["extra.weight"] = np.zeros(1, np.float32)
    with pytest.raises(CrystalQCError, match="extra.weight"):
        blend_states(base, tuned, 0.5)
    tuned = _state(2.0)
    tuned["conv.weight"] = np.zeros((3, 2), np.float32)
    with pytest.raises(CrystalQCError, match="shape"):
        blend_states(base, tuned, 0.5)


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_outside_unit_interval_is_refused(alpha):
    with pytest.raises(CrystalQCError, match="alpha"):
        blend_states(_state(1.0), _state(2.0), alpha)
