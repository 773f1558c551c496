"""Stage: the decision after each batch, teaching or self-learning (paper section 3.1)."""
