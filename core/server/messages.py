"""vLLM's chat form of the embeddings and pooling requests: ``messages`` -> one prompt.

A text conversation is rendered with the tokenizer's chat template (vLLM's defaults: no generation
prompt, the final message not continued, no special tokens added beyond the template's own) and handed
to the engine as token ids. A model with a vision tower (CLIP, SigLIP) embeds the one image of the
messages, or their texts joined by newlines when its tokenizer has no template.
"""

from __future__ import annotations

from typing import Any

from poolkit.inputs import ImagePrompt
from poolkit.server.errors import APIError


def _parts(messages: list[Any]) -> tuple[list[dict[str, str]], list[str]]:
    """The conversation as ``{"role", "content"}`` with text content (parts joined by newlines), and the image URLs."""
    conversation, images = [], []
    for m, message in enumerate(messages):
        texts = []
        for p, part in enumerate([message.content] if isinstance(message.content, str) else message.content):
            where = f"messages.{m}.content.{p}"
            if isinstance(part, str):
                texts.append(part)
            elif part.type == "text":
                if part.text is None:
                    raise APIError(400, f"{where}: a text part needs 'text'", where)
                texts.append(part.text)
            elif part.image_url is None:
                raise APIError(400, f"{where}: an image_url part needs 'image_url': {{'url': ...}}", where)
            else:
                images.append(part.image_url.url)
        if texts:
            conversation.append({"role": message.role, "content": "\n".join(texts)})
    return conversation, images


def messages_prompt(messages: list[Any], engine: Any, add_generation_prompt: bool = False,
                    continue_final_message: bool = False) -> str | list[int] | ImagePrompt:
    """The one prompt of a chat-form request (see the module docstring)."""
    if add_generation_prompt and continue_final_message:
        raise APIError(400, "add_generation_prompt and continue_final_message cannot both be true",
                       "continue_final_message")
    conversation, images = _parts(messages)
    if images and conversation:
        raise APIError(400, "messages mix text and an image: this endpoint embeds one or the other per request "
                            "(send them as separate requests)", "messages")
    if len(images) > 1:
        raise APIError(400, f"messages hold {len(images)} images; send one image per request", "messages")
    if images:
        return ImagePrompt(images[0], from_client=True)
    if not conversation:
        raise APIError(400, "messages have no text or image content", "messages")
    tok = engine.tokenizer
    if getattr(tok, "chat_template", None):
        from jinja2 import TemplateError

        try:
            text = tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=add_generation_prompt,
                                           continue_final_message=continue_final_message)
        except (TemplateError, ValueError) as exc:  # the template's own checks (roles, order): the request's fault
            raise APIError(400, f"messages could not be rendered with the model's chat template: {exc}",
                           "messages") from exc
        return tok(text, add_special_tokens=False, verbose=False)["input_ids"]
    if engine.accepts_images:  # CLIP / SigLIP: no template, the texts themselves
        return "\n".join(m["content"] for m in conversation)
    raise APIError(400, f"Model '{engine.model_config.served_name}' has no chat template, so it cannot take "
                        f"messages; send input instead", "messages")
