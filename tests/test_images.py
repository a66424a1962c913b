"""Decoding and augmentation of single images, without Ray."""

import numpy as np
import pytest
from PIL import Image

from image_files import bad_files, valid_images
from pokegan_ray.data import images as image_ops

LIMITS = image_ops.DecodeLimits()


@pytest.mark.parametrize("name", sorted(valid_images()))
def test_every_valid_mode_becomes_a_white_backed_rgb_square(name):
    square = image_ops.decode_square_rgb(valid_images()[name], name, LIMITS)
    assert square.mode == "RGB"
    assert square.size[0] == square.size[1]
    corner = np.asarray(square)[0, 0]
    assert corner.tolist() == [255, 255, 255], f"{name}: background must be white, got {corner}"


def test_transparency_is_flattened_onto_white_and_the_body_kept():
    square = np.asarray(image_ops.decode_square_rgb(valid_images()["transparent.png"], "t.png", LIMITS))
    assert square[5, 5].tolist() == [255, 255, 255]
    assert square[40, 40].tolist() == [30, 60, 200]


def test_sixteen_bit_greyscale_keeps_its_tones_instead_of_clipping_to_white():
    square = np.asarray(image_ops.decode_square_rgb(valid_images()["sixteen.png"], "s.png", LIMITS))
    reference = np.asarray(image_ops.decode_square_rgb(valid_images()["grey.jpg"], "g.jpg", LIMITS))
    assert square.min() < 100  # the dark eye survives
    assert abs(float(square.mean()) - float(reference.mean())) < 8


def test_padding_keeps_the_whole_image_in_frame():
    wide = Image.new("RGB", (100, 40), (0, 0, 0))
    square = np.asarray(image_ops.pad_to_square(wide))
    assert square.shape == (100, 100, 3)
    assert (square[30:70] == 0).all() and (square[:30] == 255).all() and (square[70:] == 255).all()


@pytest.mark.parametrize("name", sorted(bad_files()))
def test_every_kind_of_bad_file_is_refused_with_a_reason(name):
    data, expected_word = bad_files()[name]
    with pytest.raises(image_ops.UnusableImage) as refused:
        image_ops.decode_square_rgb(data, name, LIMITS)
    assert expected_word.lower() in refused.value.reason.lower()


def test_augmentation_is_deterministic_and_differs_between_versions():
    square = image_ops.decode_square_rgb(valid_images()["rgb.png"], "rgb.png", LIMITS)
    first = [np.asarray(v) for _, v in image_ops.versions(square, "a.png", count=3, seed=7, work_px=128)]
    again = [np.asarray(v) for _, v in image_ops.versions(square, "a.png", count=3, seed=7, work_px=128)]
    other_seed = [np.asarray(v) for _, v in image_ops.versions(square, "a.png", count=3, seed=8, work_px=128)]
    assert all((a == b).all() for a, b in zip(first, again))
    assert not (first[1] == other_seed[1]).all()
    assert not (first[1] == first[2]).all() and not (first[0] == first[1]).all()
    for version in first:  # the background stays white after colour jitter
        assert version[0, 0].tolist() == [255, 255, 255]
