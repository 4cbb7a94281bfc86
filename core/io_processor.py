"""The IO processor interface: a plugin's own request and response types around a pooling task.

Modelled on vLLM's ``IOProcessor`` (vllm/plugins/io_processors/interface.py). The ``plugin`` task
runs, for each request::

    raw --parse_request--> In --pre_process--> prompts --(pooling task)--> outputs --post_process--> Out
                              merge_pooling_params(params) -> PoolingParams(task=...)

and the server turns ``Out`` into its HTTP body with ``output_to_response``. The hooks are plain
functions: on the server they run on the model's tokenizer thread, never on the event loop or the
engine loop (vLLM's ``*_async`` variants are not part of this contract, and a processor that defines
them is refused when the Engine is built). A processor is
registered by name through the ``register_io_processors`` hook and selected with
``Engine(model, io_processor_plugin="name")`` or ``"io_processor_plugin"`` in the model's
``config.json``; see docs/plugins.md. :mod:`poolkit.io_runner` runs it.

This module imports no torch: a plugin may import it while ``poolkit plugins`` lists parts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from poolkit.errors import InvalidRequestError
from poolkit.params import PoolingParams
from poolkit.registry.errors import PoolkitError

if TYPE_CHECKING:
    from poolkit.config import ModelConfig, PoolerConfig
    from poolkit.outputs import PoolingRequestOutput
    from poolkit.registry.loading import PluginInfo

In = TypeVar("In")
Out = TypeVar("Out")

Prompts = Any
"""What ``pre_process`` returns: anything ``Engine.encode`` accepts as prompts: a text, token ids,
``{"prompt_token_ids": [...]}``, or a list of those (several prompts for one request)."""


@dataclass
class IOProcessorContext:
    """What a processor may read about the loaded model; built once per Engine.

    ``max_input_tokens`` is the longest prompt the engine accepts without truncating it: the
    Engine's ``max_model_len`` (which is the Sentence Transformers ``max_seq_length`` when the model
    has one and no other limit was given); kept next to ``max_model_len`` for older processors.
    ``options`` is the model's ``config.json`` field ``io_processor_options`` (settable with
    ``hf_overrides``), for processor settings such as long-text's ``max_chunks``.
    """

    name: str
    plugin: PluginInfo | None
    input_processor: Any  # the Engine's InputProcessor: :attr:`tokenizer` is read from it at each use
    model_config: ModelConfig
    pooler_config: PoolerConfig
    max_model_len: int
    max_input_tokens: int
    supported_tasks: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer as the calling thread must use it: the server tokenizes a big request on a
        thread with a copy of its own, so a processor reads this at each use rather than keeping it."""
        return self.input_processor.tokenizer

    @property
    def hf_config(self) -> Any:
        return self.model_config.hf_config


class IOProcessor(ABC, Generic[In, Out]):
    """Base class of IO processors. Set ``task`` (and ``request_type``), implement the two abstract methods.

    What a request goes through, and what each stage returns: ``parse_request`` (raw JSON -> ``In``;
    raise ``ValueError``/``TypeError`` for bad input: HTTP 400) -> ``merge_pooling_params`` ->
    ``pre_process`` (-> prompts; bad input again a 400) -> the pooling task -> ``post_process``
    (-> ``Out``: what ``Engine.encode(task="plugin")`` returns, e.g. a pydantic model) ->
    ``output_to_response`` (-> a JSON-serializable dict: the server's ``data``). An exception after
    the request was read (post_process, output_to_response) is the processor's bug: HTTP 500.
    """

    task: ClassVar[str] = "embed"
    """The engine task the processor runs (``embed``, ``token_classify``...); the default
    :meth:`merge_pooling_params` puts it into the request's params."""
    request_type: ClassVar[type[BaseModel] | None] = None
    """A pydantic model; the default :meth:`parse_request` validates raw requests with it."""

    def __init__(self, ctx: IOProcessorContext) -> None:
        self.ctx = ctx
        """What the processor may read about the engine: tokenizer, model and pooler config, limits,
        the model's ``io_processor_options`` (:class:`IOProcessorContext`)."""

    # --- request side -----------------------------------------------------------------------------

    def parse_request(self, raw: Any) -> In:
        """Validate one raw request (JSON-like) into the processor's input type."""
        if self.request_type is None or isinstance(raw, self.request_type):
            return raw
        return self.request_type.model_validate(raw)  # type: ignore[return-value]

    def merge_pooling_params(self, params: PoolingParams | None = None) -> PoolingParams:
        """The pooling params the task runs with: the caller's, with ``task`` set to this processor's."""
        return (params or PoolingParams()).model_copy(update={"task": self.task})

    @abstractmethod
    def pre_process(self, data: In, params: PoolingParams) -> Prompts:
        """Turn one parsed request into the prompt(s) to pool."""

    # --- response side ----------------------------------------------------------------------------

    @abstractmethod
    def post_process(self, outputs: list[PoolingRequestOutput], request: In) -> Out:
        """Build the processor's output from the pooled outputs of that request's prompts, in order."""

    def output_to_response(self, output: Out) -> dict[str, Any]:
        """The HTTP body (JSON-serializable) for one output."""
        if isinstance(output, BaseModel):
            return output.model_dump(mode="json")
        if isinstance(output, dict):
            return output
        return {"data": output}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.ctx.name!r}, task={self.task!r})"


class IOProcessorError(PoolkitError):
    """A request failed inside an IO processor. The message names the processor, its plugin and distribution.

    Built with :meth:`of`: a request's own fault is an :class:`InvalidIOProcessorRequest`, which is an
    :class:`InvalidRequestError` (so a ``ValueError``: HTTP 400); any other is the plugin's bug (HTTP 500).

    ``stage`` is the method that failed (``parse_request``, ``pre_process``, ``pooling``,
    ``post_process``...), ``index`` the request's position in its batch, ``cause`` the original
    exception. ``client_error`` is True when the request was invalid (HTTP 400) rather than the plugin
    broken (500): the cause is a :class:`poolkit.errors.InvalidRequestError`, or a ``ValueError`` /
    ``TypeError`` (pydantic's ``ValidationError`` included) raised while the request is read
    (``parse_request``, ``merge_pooling_params``, ``pre_process``). The same errors later, in
    ``post_process`` or ``output_to_response``, are the plugin's bug.
    """

    INPUT_STAGES = ("parse_request", "merge_pooling_params", "pre_process")

    def __init__(self, processor: str, plugin: PluginInfo | None, stage: str, cause: BaseException,
                 index: int | None = None) -> None:
        self.processor, self.plugin, self.stage, self.cause, self.index = processor, plugin, stage, cause, index
        self.client_error = self.is_invalid_input(stage, cause)
        owner = f" from {plugin.label}" if plugin is not None else ""
        where = f" for request {index}" if index is not None else ""
        super().__init__(f"IO processor '{processor}'{owner} failed in {stage}{where}: "
                         f"{type(cause).__name__}: {cause}")

    @classmethod
    def of(cls, processor: str, plugin: PluginInfo | None, stage: str, cause: BaseException,
           index: int | None = None) -> IOProcessorError:
        """The error for ``cause``: an :class:`InvalidIOProcessorRequest` when the request was invalid."""
        kind = InvalidIOProcessorRequest if cls.is_invalid_input(stage, cause) else cls
        return kind(processor, plugin, stage, cause, index)

    @classmethod
    def is_invalid_input(cls, stage: str, cause: BaseException) -> bool:
        return isinstance(cause, InvalidRequestError) or (
            stage in cls.INPUT_STAGES and isinstance(cause, (ValueError, TypeError)))


class InvalidIOProcessorRequest(IOProcessorError, InvalidRequestError):
    """An IO processor refused a request's input (``client_error`` is True): a 400, and a ``ValueError``."""


__all__ = ["IOProcessor", "IOProcessorContext", "IOProcessorError", "In", "InvalidIOProcessorRequest", "Out", "Prompts"]
