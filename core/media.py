"""Images in: loading an image prompt's source under a :class:`MediaPolicy`, and the checkpoint's image processor.

An image is a PIL image, ``bytes``, a local path, a ``data:`` URI (base64 or percent-encoded) or a
URL. What may be read is vLLM's rule: a ``file://`` URL only under ``allowed_local_media_path``, an
``http(s)://`` URL only when its host is in ``allowed_media_domains`` (then fetched with a timeout and
a size limit); any other remote URL is refused, never fetched. Plain local paths are for the offline
Engine's own caller; from a server client (``from_client``) they obey the ``file://`` rule. Every
failure is an :class:`InvalidRequestError` naming the image, so the server answers 400.

The Engine's image path lives here too: :func:`tokenize_with_images` (texts through the input
processor, images loaded and preprocessed, placeholder ids for batching), :func:`image_batches` and
:func:`run_with_images` (texts through the encoder, images through the model's vision tower).

Preprocessing is the checkpoint's own image processor through transformers' Pillow backend
(``backend="pil"``), so torchvision is never needed. Pillow is imported on first use only.
"""

from __future__ import annotations

import base64
import binascii
import io
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poolkit.batch import PackedBatch, make_batches
from poolkit.errors import InvalidInputTypeError, InvalidRequestError
from poolkit.inputs import ImagePrompt, TokenizedPrompt

DOMAINS_FLAG = "allowed_media_domains (poolkit serve --allowed-media-domains)"
LOCAL_FLAG = "allowed_local_media_path (poolkit serve --allowed-local-media-path)"


@dataclass(frozen=True)
class MediaPolicy:
    """What an image source may reach: hosts fetched over http(s), the directory files may be read from."""

    allowed_domains: frozenset[str] = frozenset()
    allowed_local_path: Path | None = None
    timeout: float = 10.0  # seconds, per fetch
    max_bytes: int = 32 * 2**20  # per image, fetched or read

    @classmethod
    def of(cls, allowed_media_domains: list[str] | None = None,
           allowed_local_media_path: str | Path | None = None) -> MediaPolicy:
        """The Engine's arguments as a policy; a local path that is not a directory is a ValueError."""
        local = None
        if allowed_local_media_path:
            local = Path(allowed_local_media_path).expanduser().resolve()
            if not local.is_dir():
                raise ValueError(f"allowed_local_media_path={str(allowed_local_media_path)!r} is not a directory")
        return cls(frozenset(d.strip().lower() for d in allowed_media_domains or () if d.strip()), local)


def _show(url: str) -> str:
    return url if len(url) <= 200 else url[:200] + "..."


def load_image(source: Any, policy: MediaPolicy, index: int = 0, from_client: bool = False) -> Any:
    """The decoded PIL image of ``source`` (image ``index`` of its request), read as ``policy`` allows."""
    from PIL import Image

    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_image(bytes(source), index)
    if isinstance(source, Path):
        return decode_image(_read_local(source, policy, index, restricted=from_client), index)
    if not isinstance(source, str):
        raise InvalidInputTypeError(f"image {index} must be a PIL image, bytes, a path or a URL, "
                                    f"got {type(source).__name__}")
    if source[:5].lower() == "data:":
        return decode_image(_data_uri(source, index), index)
    parts = urllib.parse.urlsplit(source)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return decode_image(_fetch(source, policy, index), index)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidRequestError(f"image {index}: file URL {_show(source)!r} names a host; only local files "
                                      f"(file:///path) can be read")
        path = Path(urllib.request.url2pathname(parts.path))
        return decode_image(_read_local(path, policy, index, restricted=True), index)
    if len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise InvalidRequestError(f"image {index}: URL scheme {scheme!r} is not supported; use a data:, http(s):// "
                                  f"or file:// URL", "image_url")
    return decode_image(_read_local(Path(source), policy, index, restricted=from_client), index)


def decode_image(data: bytes, index: int = 0) -> Any:
    """``data`` decoded by Pillow (fully, so that a truncated file fails here and not in preprocessing)."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # UnidentifiedImageError, truncated data, decompression bombs...
        raise InvalidRequestError(f"image {index} could not be decoded: {exc}") from exc
    return image


def _data_uri(uri: str, index: int) -> bytes:
    """The payload of ``data:[<media type>][;base64],<data>``."""
    header, comma, payload = uri[5:].partition(",")
    if not comma:
        raise InvalidRequestError(f"image {index}: malformed data: URI (no ',' before the data)")
    fields = [f.strip().lower() for f in header.split(";")]
    media_type = fields[0]
    if media_type and not (media_type.startswith("image/") or media_type == "application/octet-stream"):
        raise InvalidRequestError(f"image {index}: the data: URI's media type {media_type!r} is not an image type")
    if "base64" not in fields[1:]:
        return urllib.parse.unquote_to_bytes(payload)
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError(f"image {index}: the data: URI's base64 payload is invalid: {exc}") from exc


def _read_local(path: Path, policy: MediaPolicy, index: int, restricted: bool) -> bytes:
    """A local file's bytes; ``restricted``: only under the policy's allowed directory (symlinks resolved)."""
    if restricted:
        if policy.allowed_local_path is None:
            raise InvalidRequestError(f"image {index}: local files are not accepted ({str(path)!r}); set "
                                      f"{LOCAL_FLAG} to allow files under a directory", "image_url")
        resolved = path.expanduser().resolve()
        if not resolved.is_relative_to(policy.allowed_local_path):
            raise InvalidRequestError(f"image {index}: {str(path)!r} is outside the allowed local media path "
                                      f"{str(policy.allowed_local_path)!r}", "image_url")
        path = resolved
    try:
        size = path.stat().st_size
        if size > policy.max_bytes:
            raise InvalidRequestError(f"image {index}: {str(path)!r} has {size} bytes, more than the "
                                      f"{policy.max_bytes} allowed per image")
        return path.read_bytes()
    except OSError as exc:
        raise InvalidRequestError(f"image {index}: cannot read {str(path)!r}: {exc.strerror or exc}") from exc


class _AllowListRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to an allowed host, so that the allow-list cannot be bypassed."""

    def __init__(self, allowed: frozenset[str], index: int) -> None:
        self.allowed, self.index = allowed, index

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 (urllib's signature)
        host = (urllib.parse.urlsplit(newurl).hostname or "").lower()
        if host not in self.allowed:
            raise InvalidRequestError(f"image {self.index}: {_show(req.full_url)!r} redirects to {_show(newurl)!r}, "
                                      f"whose host {host!r} is not in {DOMAINS_FLAG}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch(url: str, policy: MediaPolicy, index: int) -> bytes:
    """An allowed URL's body (at most ``max_bytes``); a host outside the allow-list is refused unfetched."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if host not in policy.allowed_domains:
        raise InvalidRequestError(f"image {index}: remote URL {_show(url)!r} is not fetched: its host {host!r} is "
                                  f"not in {DOMAINS_FLAG}; send the image as a data: URI or allow the domain",
                                  "image_url")
    opener = urllib.request.build_opener(_AllowListRedirects(policy.allowed_domains, index))
    try:
        with opener.open(urllib.request.Request(url, headers={"User-Agent": "poolkit"}), timeout=policy.timeout) as r:
            data = r.read(policy.max_bytes + 1)
    except InvalidRequestError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:  # HTTP errors, DNS, timeouts, bad URLs
        raise InvalidRequestError(f"image {index}: fetching {_show(url)!r} failed: {exc}", "image_url") from exc
    if len(data) > policy.max_bytes:
        raise InvalidRequestError(f"image {index}: {_show(url)!r} is larger than the {policy.max_bytes} bytes "
                                  f"allowed per image")
    return data


# --- preprocessing --------------------------------------------------------------------------------


def load_image_processor(model_dir: str | Path) -> Any:
    """The checkpoint's image processor on transformers' Pillow backend, or None when it has none.

    transformers' own ``AutoImageProcessor`` finds it, so both layouts are read: ``preprocessor_config.json``
    (transformers 4) and the ``image_processor`` of ``processor_config.json`` (what transformers 5's
    ``CLIPProcessor.save_pretrained`` writes). It raises OSError when the directory has neither.
    """
    import transformers
    from transformers import AutoImageProcessor

    kwargs: dict[str, Any] = {"backend": "pil"}  # transformers 5
    if int(transformers.__version__.split(".")[0]) < 5:
        kwargs = {"use_fast": False}  # transformers 4: the PIL/numpy class
    try:
        return AutoImageProcessor.from_pretrained(str(model_dir), **kwargs)
    except OSError:
        from transformers.utils import IMAGE_PROCESSOR_NAME, PROCESSOR_NAME

        if any((Path(model_dir) / name).is_file() for name in (IMAGE_PROCESSOR_NAME, PROCESSOR_NAME)):
            raise  # there is one, and it is broken: say so when the model loads
        return None  # no image processor at all: the model reads text only


def preprocess_image(processor: Any, image: Any, index: int = 0) -> Any:
    """``(3, H, W)`` float32 pixel values of one decoded image, as the checkpoint's processor makes them."""
    try:
        return processor(images=[image], return_tensors="pt")["pixel_values"][0]
    except Exception as exc:  # an image mode or shape the processor cannot take
        raise InvalidRequestError(f"image {index} could not be preprocessed: {type(exc).__name__}: {exc}") from exc


__all__ = ["MediaPolicy", "decode_image", "load_image", "load_image_processor", "preprocess_image"]


# --- the Engine's image path ------------------------------------------------------------------------------
# ``engine`` arguments are a poolkit.Engine (typed Any: the engine module imports this one).


def has_vision_tower(model: Any) -> bool:
    """Whether ``model`` has a vision tower (it overrides :meth:`poolkit.PoolingModel.embed_images`)."""
    from poolkit.model.interface import PoolingModel

    return type(model).embed_images is not PoolingModel.embed_images


def tokenize_with_images(engine: Any, items: list[Any], params: list[Any], task: str,
                         instruction: str | None) -> list[TokenizedPrompt]:
    """Texts through the input processor; each image loaded under the media policy, preprocessed by the
    checkpoint's image processor, with ``model.image_tokens`` placeholder ids (vLLM's CLIP: id 0)."""
    images = [i for i, p in enumerate(items) if isinstance(p, ImagePrompt)]
    name = f"'{engine.model_config.served_name}' ({engine.architecture})"
    if not has_vision_tower(engine.model):
        raise InvalidRequestError(f"Model {name} does not accept images (prompt {images[0]} is an image); "
                                  f"it embeds text only", "input")
    if engine.image_processor is None:
        raise InvalidRequestError(f"Model {name} has no image processor (preprocessor_config.json, or "
                                  f"processor_config.json's image_processor), so it cannot read images", "input")
    if task != "embed":
        raise InvalidRequestError(f"Images are embedded with the embed task; {task!r} takes text only", "task")
    out: list[Any] = [None] * len(items)
    texts = [i for i, p in enumerate(items) if not isinstance(p, ImagePrompt)]
    if texts:
        done = engine.input_processor([items[i] for i in texts], [params[i] for i in texts], instruction)
        for i, t in zip(texts, done):
            out[i] = t
    placeholders = [0] * max(1, engine.model.image_tokens)  # what an image costs in batching and usage
    for i in images:
        image = load_image(items[i].image, engine.media_policy, i, items[i].from_client)
        out[i] = TokenizedPrompt(list(placeholders), pixel_values=preprocess_image(engine.image_processor, image, i))
    return out


def image_batches(tokens: list[Any], max_batch_tokens: int) -> list[list[int]]:
    """:func:`make_batches` over the texts, and over the images apart (they run through another tower)."""
    images = [i for i, t in enumerate(tokens) if t.pixel_values is not None]
    if not images:
        return make_batches([len(t.ids) for t in tokens], max_batch_tokens)
    texts = sorted(set(range(len(tokens))) - set(images))
    return [[group[j] for j in batch] for group in (texts, images)
            for batch in make_batches([len(tokens[i].ids) for i in group], max_batch_tokens)]


def run_with_images(engine: Any, adapter: Any, tokens: list[Any], params: list[Any]) -> list[Any]:
    """A batch holding images: its texts through ``engine.run_batch``, its images through ``model.embed_images``;
    each image's embedding then goes through the task as a one-token sequence (normalize, dimensions)."""
    import torch

    images = [i for i, t in enumerate(tokens) if t.pixel_values is not None]
    texts = sorted(set(range(len(tokens))) - set(images))
    out: list[Any] = [None] * len(tokens)
    if texts:
        for i, v in zip(texts, engine.run_batch(adapter, [tokens[i] for i in texts], [params[i] for i in texts])):
            out[i] = v
    pixels = torch.stack([tokens[i].pixel_values for i in images]).to(engine.device)
    one_token = PackedBatch.from_token_lists([[0]] * len(images), device=engine.device)
    with torch.inference_mode():
        pooled = adapter.pool(engine.model.embed_images(pixels).float(), one_token, [params[i] for i in images])
    for i, v in zip(images, pooled):
        out[i] = v.float().cpu()
    return out
