"""Training building blocks: loss configuration, losses, optimiser (the loop lives elsewhere)."""
