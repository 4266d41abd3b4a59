from selfinstruct.filters.base import Decision, InstructionFilter, run_filters
from selfinstruct.filters.heuristics import HeuristicFilter
from selfinstruct.filters.rouge import NoveltyFilter
from selfinstruct.filters.rouge_index import RougeIndex

__all__ = ["Decision", "HeuristicFilter", "InstructionFilter", "NoveltyFilter", "RougeIndex", "run_filters"]
