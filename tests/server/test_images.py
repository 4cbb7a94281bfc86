"""Images over HTTP: ``/v1/embeddings`` in vLLM's chat form (``messages`` with ``image_url`` parts) on a tiny CLIP,
its media rules (data: URIs; remote URLs only from allowed hosts; local files only under the allowed path) and
the 400s for bad input, next to a text-only model."""

from __future__ import annotations

import base64
import http.server
import threading

import httpx
import pytest

from poolkit import Engine, testing
from poolkit.server.app import create_app
from tests.builtin_models.builders_clip import build_tiny_clip, data_uri, png_bytes, sample_images
from tests.server.conftest import LiveServer


def image_message(url: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]


class ImageHost:
    """A local HTTP server serving one PNG at /cat.png (and a redirect to another host at /away), counting hits."""

    def __init__(self, body: bytes) -> None:
        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                hits.append(self.path)
                if self.path == "/away":
                    self.send_response(302)
                    self.send_header("Location", f"http://localhost:{self.server.server_port}/cat.png")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    media = root / "media"
    media.mkdir()
    img = sample_images(1, seed=11)[0]
    (media / "cat.png").write_bytes(png_bytes(img))
    host = ImageHost(png_bytes(img))
    clip_dir = build_tiny_clip(root / "clip", seed=3)
    clip = Engine(str(clip_dir), allowed_media_domains=["127.0.0.1"], allowed_local_media_path=str(media))
    bert = Engine(str(testing.build_tiny_bert(root / "bert")))
    live = LiveServer(create_app(lambda: {"clip": clip, "bert": bert}))
    yield live, clip, img, media, host
    live.stop()
    host.close()


def post(live, **body):
    return httpx.post(live.url + "/v1/embeddings", json={"model": "clip", **body}, timeout=30)


def test_messages_with_a_data_uri_match_the_offline_engine(setup):
    live, clip, img, _, _ = setup
    r = post(live, messages=image_message(data_uri(img)))
    assert r.status_code == 200, r.text
    body = r.json()
    [offline] = clip.embed({"multi_modal_data": {"image": img}})
    assert len(body["data"]) == 1 and body["usage"]["prompt_tokens"] == 17  # 16 patches + [class]
    assert testing.max_abs_diff(body["data"][0]["embedding"], offline.outputs.data) <= 1e-6
    b64 = post(live, messages=image_message(data_uri(img)), encoding_format="base64").json()["data"][0]["embedding"]
    assert len(base64.b64decode(b64)) == 16 * 4


def test_text_messages_and_input_embed_text(setup):
    live, clip, _, _, _ = setup
    [offline] = clip.embed("a photo of a cat")
    for body in ({"messages": [{"role": "user", "content": "a photo of a cat"}]},
                 {"messages": [{"role": "user", "content": [{"type": "text", "text": "a photo of a cat"}]}]},
                 {"input": "a photo of a cat"}):
        r = post(live, **body)
        assert r.status_code == 200, r.text
        assert testing.max_abs_diff(r.json()["data"][0]["embedding"], offline.outputs.data) <= 1e-6


def test_allowed_remote_and_local_images(setup):
    live, clip, img, media, host = setup
    [offline] = clip.embed({"multi_modal_data": {"image": img}})
    for url in (f"http://127.0.0.1:{host.port}/cat.png", (media / "cat.png").as_uri(), str(media / "cat.png")):
        r = post(live, messages=image_message(url))
        assert r.status_code == 200, (url, r.text)
        assert testing.max_abs_diff(r.json()["data"][0]["embedding"], offline.outputs.data) <= 1e-6
    assert host.hits == ["/cat.png"]


@pytest.mark.parametrize("url, match", [
    ("https://example.com/cat.png", r"remote URL 'https://example.com/cat.png' is not fetched: its host "
                                    r"'example.com' is not in allowed_media_domains \(poolkit serve --allowed-media-domains\)"),
    ("data:image/png;base64,@@@", "base64 payload is invalid"),
    ("data:image/png;base64," + base64.b64encode(b"GIF89a but broken").decode(), "image 0 could not be decoded"),
    ("file:///etc/hosts", "is outside the allowed local media path"),
    ("/etc/hosts", "is outside the allowed local media path"),  # a client's plain path obeys the same rule
])
def test_bad_image_urls_are_400s(setup, url, match):
    import re

    r = post(setup[0], messages=image_message(url))
    assert r.status_code == 400 and r.json()["type"] == "BadRequestError", r.text
    assert re.search(match, r.json()["message"]), r.json()["message"]


def test_remote_urls_outside_the_allow_list_are_never_fetched(setup):
    live, _, _, _, host = setup
    before = len(host.hits)
    r = post(live, messages=image_message(f"http://localhost:{host.port}/cat.png"))  # reachable, not allowed
    assert r.status_code == 400 and "'localhost' is not in allowed_media_domains" in r.json()["message"]
    r = post(live, messages=image_message(f"http://127.0.0.1:{host.port}/away"))  # an allowed host redirecting away
    assert r.status_code == 400 and "redirects to" in r.json()["message"]
    assert host.hits[before:] == ["/away"]


def test_bad_requests_are_400s(setup):
    live, _, img, _, _ = setup
    mixed = [{"role": "user", "content": [{"type": "text", "text": "a cat"},
                                          {"type": "image_url", "image_url": {"url": data_uri(img)}}]}]
    cases = [
        ({"model": "bert", "messages": image_message(data_uri(img))}, "Model 'bert' (BertModel) does not accept images"),
        ({"messages": mixed}, "messages mix text and an image"),
        ({"messages": image_message(data_uri(img)) * 2}, "messages hold 2 images"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "an image_url part needs 'image_url'"),
        ({"input": "x", "messages": image_message(data_uri(img))}, "Give either input or messages"),
        ({}, "Give either input or messages"),
        ({"messages": [{"role": "user", "content": [{"type": "audio_url"}]}]}, "Invalid request: messages"),
    ]
    for body, message in cases:
        r = httpx.post(live.url + "/v1/embeddings", json={"model": "clip", **body}, timeout=30)
        assert r.status_code == 400 and message in r.json()["message"], (body, r.text)


def test_serve_flags_reach_the_engine():
    from poolkit.cli import build_parser
    from poolkit.cli.parser import engine_kwargs

    args = build_parser().parse_args(["serve", "m", "--allowed-media-domains", "a.com", "b.org",
                                      "--allowed-local-media-path", "/srv/images"])
    kwargs = engine_kwargs(args)
    assert kwargs["allowed_media_domains"] == ["a.com", "b.org"]
    assert kwargs["allowed_local_media_path"] == "/srv/images"
    default = engine_kwargs(build_parser().parse_args(["serve", "m"]))  # unset: the Engine's default, nothing reachable
    assert default["allowed_media_domains"] is None and default["allowed_local_media_path"] is None
