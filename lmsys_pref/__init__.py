"""lmsys_pref: predict which of two chatbot answers a person prefers.

Light imports only here: torch-based modules load on first use.
"""
__version__ = "0.3.0"

from . import _renamed  # noqa: E402

_renamed.install()  # old module paths warn and forward for one release (README changelog)
