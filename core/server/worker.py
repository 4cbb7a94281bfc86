"""Where the engine loop and the model queues used to live; kept so that old imports work."""

from poolkit.server.engine_loop import EngineLoop
from poolkit.server.queue import ModelWorker, request_id_var

__all__ = ["EngineLoop", "ModelWorker", "request_id_var"]
