"""selfinstruct: instruction-tuning data from a few seed tasks with Self-Instruct, and LoRA SFT."""

__version__ = "0.1.0"
