"""IO processors that fail on purpose: in pre_process, in post_process, and one whose module does not exist."""

import poolkit


@poolkit.hookimpl
def register_io_processors(register):
    register("raises-in-pre-process", "poolkit_broken_io.processors:RaisesInPreProcess")
    register("raises-in-post-process", "poolkit_broken_io.processors:RaisesInPostProcess")
    register("missing-module", "poolkit_broken_io.does_not_exist:Processor")
