"""``poolkit.media``: image sources decoded (or refused) under a MediaPolicy, without a model."""

from __future__ import annotations

import base64
import urllib.parse

import numpy as np
import pytest
import torch

from poolkit.errors import InvalidRequestError
from poolkit.media import MediaPolicy, load_image
from tests.builtin_models.builders_clip import png_bytes, sample_images


def pixels(image):
    return np.asarray(image)


def test_every_source_decodes_to_the_same_pixels(tmp_path):
    img = sample_images(1)[0]
    raw = png_bytes(img)
    (tmp_path / "a.png").write_bytes(raw)
    policy = MediaPolicy.of(allowed_local_media_path=tmp_path)
    sources = [img, raw, bytearray(raw), str(tmp_path / "a.png"), tmp_path / "a.png", (tmp_path / "a.png").as_uri(),
               "data:image/png;base64," + base64.b64encode(raw).decode(),
               "data:;base64," + base64.b64encode(raw).decode(),  # no media type: allowed
               "data:image/png," + urllib.parse.quote_from_bytes(raw)]  # percent-encoded, not base64
    for source in sources:
        assert np.array_equal(pixels(load_image(source, policy)), pixels(img)), type(source)


def test_policy_defaults_reach_nothing(tmp_path):
    img_path = tmp_path / "a.png"
    img_path.write_bytes(png_bytes(sample_images(1)[0]))
    policy = MediaPolicy.of()
    assert load_image(str(img_path), policy).size  # the offline caller's own path: allowed
    with pytest.raises(InvalidRequestError, match="image 3: local files are not accepted"):
        load_image(str(img_path), policy, index=3, from_client=True)  # the same path from a server client
    with pytest.raises(InvalidRequestError, match="image 0: local files are not accepted"):
        load_image(img_path.as_uri(), policy)
    with pytest.raises(InvalidRequestError, match="names a host"):
        load_image("file://server/share/a.png", MediaPolicy.of(allowed_local_media_path=tmp_path))


def test_policy_normalizes_domains_and_limits_size(tmp_path):
    assert MediaPolicy.of([" Example.COM ", ""]).allowed_domains == frozenset({"example.com"})
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 2048)
    small = MediaPolicy(allowed_local_path=tmp_path.resolve(), max_bytes=1024)
    with pytest.raises(InvalidRequestError, match="has 2048 bytes, more than the 1024 allowed"):
        load_image(big.as_uri(), small)
    long_url = "https://example.com/" + "x" * 500
    with pytest.raises(InvalidRequestError) as err:
        load_image(long_url, MediaPolicy())
    assert len(str(err.value)) < 400  # a long URL is cut in the message


def test_checkpoint_saved_by_current_transformers_reads_images(tmp_path):
    """transformers 5's ``CLIPProcessor.save_pretrained`` writes processor_config.json, no preprocessor_config.json."""
    import torch.nn.functional as F
    from transformers import AutoImageProcessor, AutoProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from poolkit import Engine, testing
    from tests.builtin_models.builders_clip import build_tiny_clip, data_uri

    path = build_tiny_clip(tmp_path / "clip", seed=2)
    processor = CLIPProcessor(image_processor=AutoImageProcessor.from_pretrained(path),
                              tokenizer=CLIPTokenizer.from_pretrained(path))
    (path / "preprocessor_config.json").unlink()
    processor.save_pretrained(path)
    if (path / "preprocessor_config.json").is_file():  # transformers 4 writes the old layout: nothing to test
        pytest.skip("this transformers saves preprocessor_config.json")
    img = sample_images(1, seed=3)[0]
    [out] = Engine(str(path)).embed([{"multi_modal_data": {"image": data_uri(img)}}])
    reloaded = AutoProcessor.from_pretrained(path)  # the reference reads the same files with transformers
    with torch.no_grad():
        feats = CLIPModel.from_pretrained(path).eval().get_image_features(**reloaded(images=[img], return_tensors="pt"))
    want = F.normalize(getattr(feats, "pooler_output", feats), dim=-1)[0]
    assert testing.max_abs_diff(out.outputs.data, want) <= 1e-5
