"""`python -m selfinstruct report`: the paper's Table 1 and figures for a run directory or an instruction file."""
