"""Built-in IO processors for the ``plugin`` task, registered through the ``io_plugins`` entry point.

None ship yet; the hook is wired so that they register exactly as a third-party one does.
"""

from poolkit.registry.hookspecs import hookimpl


@hookimpl
def register_io_processors(register):
    return None
