"""What `train.py` composes beyond the Trainer: the candidate codes' operating points and the model card."""
