"""The model side of the pipeline: the contract every architecture implements (:mod:`poolkit.model.interface`)."""
