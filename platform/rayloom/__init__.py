"""rayloom: one Hydra config tree and one Ray cluster for an LLM's whole life.

Importing this package is cheap and side-effect free: it never starts Ray, loads torch or
touches the network. Heavy imports happen inside the functions that need them.
"""

__version__ = "0.1.0"
