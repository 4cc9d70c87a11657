"""`accel tune`: search the methods' declared settings for the fastest stack inside a quality budget.

space.py (the joint space from each config's ``tunable``), evaluate.py (paired evaluation of a
candidate, cached per workload), search.py (successive halving, exhaustive grid, front),
files.py (tune.json, `load_configs`), run.py (the run behind `accel tune`; its flags: accel/commands/tune.py).
"""

from .files import ConfigFileError, load_configs, read_choice
from .search import QualityBudget, exhaustive, front, successive_halving
from .space import Candidate, Space, build_space

__all__ = ["Candidate", "ConfigFileError", "QualityBudget", "Space", "build_space", "exhaustive", "front",
           "load_configs", "read_choice", "successive_halving"]
