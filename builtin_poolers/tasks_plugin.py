"""Built-in task adapters, registered through the ``builtin_tasks`` entry point."""

from poolkit.registry.hookspecs import hookimpl


@hookimpl
def register_tasks(register):
    register("embed", "poolkit.builtin_poolers.tasks:EmbedTask")
    register("token_embed", "poolkit.builtin_poolers.tasks:TokenEmbedTask")
    register("classify", "poolkit.builtin_poolers.tasks:ClassifyTask")
    register("score", "poolkit.builtin_poolers.tasks:ScoreTask")
    register("token_classify", "poolkit.builtin_poolers.tasks:TokenClassifyTask")
