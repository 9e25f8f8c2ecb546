"""What train.py composes: its arguments and presets, word2vec embeddings, the R-Drop Trainer, the
candidate codes' operating points, and the saved checkpoint folder with its model card."""
