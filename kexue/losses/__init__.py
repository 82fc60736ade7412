"""Losses, one concept per module (CoSENT, SimBERT contrastive, multilabel categorical CE, …)."""
