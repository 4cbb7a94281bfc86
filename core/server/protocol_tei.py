"""Request bodies of Hugging Face Text Embeddings Inference (TEI), field for field.

Reference: text-embeddings-inference router/src/http/types.rs. Numbers and booleans are strict, as
serde's are (``"truncate": "yes"`` and ``"dimensions": "8"`` are TEI's 422 naming the field, never taken as
true and 8). Unknown fields are ignored, as serde does (``huggingface_hub`` sends ``encoding_format`` and
``parameters`` TEI never reads); ``model`` is poolkit's own: which served model answers (TEI serves one;
default: the first).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from poolkit.params import Dimensions

Direction = Literal["left", "right", "Left", "Right"]  # TEI's TruncationDirection takes both spellings
InputType = StrictStr | list[StrictInt]  # a text, or its token ids
Inputs = InputType | list[InputType]  # one input or a batch; a list of ints is ONE input (its ids)


class TEIRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(default=None, description="poolkit: the served model (default: the first)")
    truncate: StrictBool | None = Field(default=None, description="cut inputs longer than the model's limit "
                                  "(false: such an input is an error); default: the server's auto-truncate")
    truncation_direction: Direction = Field(default="right", description="Left keeps the last tokens")


class TEIEmbedRequest(TEIRequest):
    inputs: Inputs
    prompt_name: str | None = None
    normalize: StrictBool = True
    dimensions: Dimensions | None = None


class TEIEmbedSparseRequest(TEIRequest):
    inputs: Inputs
    prompt_name: str | None = None


class TEIEmbedAllRequest(TEIRequest):
    inputs: Inputs
    prompt_name: str | None = None


class TEIPredictRequest(TEIRequest):
    inputs: StrictStr | list[StrictStr] | list[list[StrictStr]] = Field(
        description="a text, a pair [text, text], or a batch of texts and pairs [[text], [text, text], ...]")
    raw_scores: StrictBool = False


class TEIRerankRequest(TEIRequest):
    query: StrictStr
    texts: list[StrictStr]
    raw_scores: StrictBool = False
    return_text: StrictBool = False


class SimilarityInput(BaseModel):
    source_sentence: StrictStr
    sentences: list[StrictStr]


class SimilarityParameters(BaseModel):
    model_config = ConfigDict(extra="ignore")

    truncate: StrictBool | None = None
    truncation_direction: Direction = "right"
    prompt_name: str | None = None


class TEISimilarityRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    inputs: SimilarityInput
    parameters: SimilarityParameters | None = None


class TEITokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    inputs: StrictStr | list[StrictStr]
    add_special_tokens: StrictBool = True
    prompt_name: str | None = None


class TEIDecodeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    ids: list[StrictInt] | list[list[StrictInt]]
    skip_special_tokens: StrictBool = True


# --- responses (for the OpenAPI schema; the routes answer plain JSON lists) ---------------------------


class Prediction(BaseModel):
    score: float
    label: str


class SparseValue(BaseModel):
    index: int
    value: float
