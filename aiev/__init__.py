"""aiev: AIEV-INSTRUCT (the method behind AutoCoder) as a reproducible workflow."""

__version__ = "0.1.0"
