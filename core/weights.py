"""Moved to :mod:`poolkit.model.weights`; kept so that old imports work."""

from poolkit.model.weights import Weights, _MISSING, load_extra_weight_files, load_state_dict, strip_prefix, take  # noqa: F401
