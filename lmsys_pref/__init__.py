"""lmsys_pref: predict which of two chatbot answers a person prefers.

Light imports only here: torch-based modules load on first use.
"""
__version__ = "0.1.0"
