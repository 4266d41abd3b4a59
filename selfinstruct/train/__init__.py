"""LoRA SFT on generated instruction data: `python -m selfinstruct train` (see train/cli.py)."""
