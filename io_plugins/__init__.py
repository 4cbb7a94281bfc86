"""Built-in IO processors for the ``plugin`` task, registered through the ``io_plugins`` entry point.

They register exactly as a third-party one does: a name and a lazy ``"module:Class"`` target, so
listing plugins imports none of them. The interface is :mod:`poolkit.io_processor`; the
engine side (selection, batching, per-request failures) is :mod:`poolkit.io_runner`.

- ``sparse-lexical``: sparse weights as ``{token: weight}``: BGE-M3's (task ``token_classify``) or a
  SPLADE model's vocabulary vector (task ``embed``).
- ``long-text``: texts longer than the model's limit, embedded by chunks (task ``embed``).
- ``multi-vector-matryoshka``: one normalized vector per Matryoshka size (task ``embed``); the
  processor to copy.
"""

from poolkit.registry.hookspecs import hookimpl

IO_PROCESSORS = {
    "sparse-lexical": "poolkit.io_plugins.sparse_lexical:SparseLexicalProcessor",
    "long-text": "poolkit.io_plugins.long_text:LongTextProcessor",
    "multi-vector-matryoshka": "poolkit.io_plugins.matryoshka:MatryoshkaProcessor",
}


@hookimpl
def register_io_processors(register):
    for name, target in IO_PROCESSORS.items():
        register(name, target)
