import numpy as np
import pytest

from accelnet import Linear, Sequential, check_gradients, numerical_gradient
from accelnet.gradcheck import relative_error


def test_numerical_gradient_of_the_books_function_2():
    # the book's chapter 4: f(x0, x1) = x0^2 + x1^2 has gradient (2 x0, 2 x1)
    x = np.array([3.0, 4.0])
    np.testing.assert_allclose(numerical_gradient(lambda x: np.sum(x**2), x), [6.0, 8.0], rtol=1e-8)
    np.testing.assert_array_equal(x, [3.0, 4.0])  # restored


def test_numerical_gradient_rejects_non_contiguous_arrays():
    with pytest.raises(ValueError, match="C-contiguous"):
        numerical_gradient(lambda x: x.sum(), np.ones((3, 3))[:, ::2])


def test_relative_error_is_scaled_by_the_gradient():
    assert relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert relative_error(np.array([100.0, 2.0]), np.array([100.0, 3.0])) == pytest.approx(0.01)


def test_check_gradients_restores_parameters_and_rng():
    m = Sequential([Linear(3)], (2,), dtype="float64")
    before = m.state_dict()
    state = m.rng.bit_generator.state
    check_gradients(m, x=np.ones((2, 2)), t=np.array([0, 1]))
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    assert m.rng.bit_generator.state == state
