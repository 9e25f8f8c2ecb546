"""Dataset builders: MIMIC-III splits (`mimic_iii`) and code synonyms (`code_synonyms`)."""
