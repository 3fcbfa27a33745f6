"""What ``accelnet predict`` accepts as samples of a model's input, and the one-line reason when
a file is not that."""

import re

import numpy as np
import pytest

from accelnet.data import write_idx
from accelnet.inputs import InputError, read_inputs

IMAGE, FLAT = (1, 28, 28), (784,)


@pytest.mark.parametrize("shape,input_shape,n", [
    ((28, 28), IMAGE, 1), ((1, 28, 28), IMAGE, 1), ((5, 28, 28), IMAGE, 5), ((5, 1, 28, 28), IMAGE, 5),
    ((784,), IMAGE, 1), ((5, 784), IMAGE, 5), ((784,), FLAT, 1), ((5, 784), FLAT, 5), ((28, 28), FLAT, 1),
    ((5, 28, 28), FLAT, 5)])
def test_an_array_of_samples_in_any_usual_layout_is_read(shape, input_shape, n, tmp_path):
    a = np.random.default_rng(0).random(shape, dtype=np.float32)
    np.save(tmp_path / "x.npy", a)
    x = read_inputs(tmp_path / "x.npy", input_shape)
    assert x.shape == (n, *input_shape) and x.dtype == np.float32
    np.testing.assert_array_equal(x.ravel(), a.ravel())


def test_integer_pixels_are_scaled_as_the_data_loaders_scale_them(tmp_path):
    write_idx(tmp_path / "x.idx", np.array([[[0, 255] * 14] * 28], np.uint8), compress=False)
    x = read_inputs(tmp_path / "x.idx", IMAGE)
    assert x.shape == (1, *IMAGE) and x.min() == 0 and x.max() == 1


def test_invert_turns_dark_on_light_into_light_on_dark(tmp_path):
    np.save(tmp_path / "x.npy", np.full((28, 28), 0.25, np.float32))
    assert read_inputs(tmp_path / "x.npy", IMAGE, invert=True).max() == 0.75


def test_an_image_is_made_grayscale_and_resized_to_the_model(tmp_path):
    Image = pytest.importorskip("PIL.Image", reason="the images extra (Pillow) is not installed")
    Image.new("RGB", (56, 56), (255, 255, 255)).save(tmp_path / "white.png")
    x = read_inputs(tmp_path / "white.png", IMAGE)
    assert x.shape == (1, *IMAGE) and np.allclose(x, 1.0)
    assert read_inputs(tmp_path / "white.png", FLAT).shape == (1, 784)


@pytest.mark.parametrize("content,message", [
    (np.zeros((3, 5)), "shape (3, 5) is neither one sample nor a batch"),
    (np.array([[np.nan] * 784]), "holds NaN or inf"),
    (np.full((28, 28), 300, np.int32), "integer pixels must be 0-255, got 300..300"),
    (np.array(["a"] * 784), "dtype <U1 is not pixels"),
])
def test_an_array_that_is_not_samples_is_one_message_naming_the_file(content, message, tmp_path):
    np.save(tmp_path / "x.npy", content)
    with pytest.raises(InputError, match=re.escape(message)) as err:
        read_inputs(tmp_path / "x.npy", IMAGE)
    assert str(err.value).startswith(str(tmp_path / "x.npy"))


@pytest.mark.parametrize("name,data,message", [
    ("x.png", b"not an image", "not a readable image"),
    ("x.npy", b"\x93NUMPY garbage", "not a readable .npy array"),
    ("x.bin", b"\x00\x01\x02", "not an image (by its suffix), a .npy array or an IDX file"),
])
def test_a_file_of_the_wrong_kind_is_one_message(name, data, message, tmp_path):
    if name.endswith(".png"):
        pytest.importorskip("PIL", reason="the images extra (Pillow) is not installed")
    (tmp_path / name).write_bytes(data)
    with pytest.raises(InputError, match=re.escape(message)):
        read_inputs(tmp_path / name, IMAGE)


def test_a_missing_file_is_one_message(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_inputs(tmp_path / "nope.npy", IMAGE)


def test_a_folder_is_one_message_saying_to_pass_its_files(tmp_path):
    with pytest.raises(InputError, match="is a folder, not a file"):
        read_inputs(tmp_path, IMAGE)
