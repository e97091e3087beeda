"""Pareto front and hypervolume."""
import numpy as np
import pytest

from models.pareto import hypervolume, pareto_front


def test_front_drops_dominated_points_and_sorts():
    pts = [(0.7, 0.9), (0.8, 0.8), (0.75, 0.7), (0.9, 0.6), (0.8, 0.8)]
    np.testing.assert_allclose(pareto_front(pts), [(0.7, 0.9), (0.8, 0.8), (0.9, 0.6)])


def test_hypervolume_of_a_staircase():
    # union of rectangles [0.5,0.7]x[0.5,0.9], [0.5,0.8]x[0.5,0.8], [0.5,0.9]x[0.5,0.6]
    expected = 0.2 * 0.4 + 0.1 * 0.3 + 0.1 * 0.1
    assert hypervolume([(0.7, 0.9), (0.8, 0.8), (0.9, 0.6), (0.6, 0.6)], (0.5, 0.5)) == pytest.approx(expected)


def test_points_behind_the_reference_add_nothing_and_bad_reference_raises():
    assert hypervolume([(0.4, 0.9), (0.9, 0.45)], (0.5, 0.5)) == 0.0
    assert hypervolume([(0.6, 0.6)], (0.5, 0.5)) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="reference"):
        hypervolume([(0.6, 0.6)], (0.5,))
