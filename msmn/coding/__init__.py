"""Coding notes in bulk: the `msmn-code` command (`python -m msmn.coding` under torchrun)."""
