"""Every exception edgesdk raises (see the class docstrings for when)."""

from ._errors import *  # noqa: F401,F403
from ._errors import __all__  # noqa: F401
