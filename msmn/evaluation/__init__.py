"""Evaluation: ICD-coding metrics, the tuned threshold, ranking and evidence measures, and their tables."""
