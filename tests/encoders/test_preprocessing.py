"""Input statistics of pretrained image encoders."""

import json

import pytest

from mango_jax.data.imaging import IMAGENET_MEAN, IMAGENET_STD
from mango_jax.encoders.preprocessing import image_statistics


def test_statistics_from_preprocessor_config_else_imagenet(tmp_path):
    assert image_statistics(str(tmp_path)) == (IMAGENET_MEAN, IMAGENET_STD)
    assert image_statistics(str(tmp_path / "model.safetensors")) == (IMAGENET_MEAN, IMAGENET_STD)
    clip = {"image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711], "crop_size": 224}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(clip))
    for path in (tmp_path, tmp_path / "model.safetensors"):
        assert image_statistics(str(path)) == (tuple(clip["image_mean"]),
                                               tuple(clip["image_std"]))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3}))
    with pytest.raises(ValueError, match="image_std"):
        image_statistics(str(tmp_path))
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5, 0.5]}))
    with pytest.raises(ValueError, match="3 numbers"):
        image_statistics(str(tmp_path))
