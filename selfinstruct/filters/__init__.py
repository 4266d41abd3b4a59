from selfinstruct.filters.base import Decision, InstructionFilter, run_filters
from selfinstruct.filters.heuristics import HeuristicFilter
from selfinstruct.filters.rouge import NoveltyFilter, RougePool

__all__ = ["Decision", "HeuristicFilter", "InstructionFilter", "NoveltyFilter", "RougePool", "run_filters"]
