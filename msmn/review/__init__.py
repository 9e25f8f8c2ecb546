"""Reviewing codes in the browser: the `msmn-app` command and `app.py` (a Hugging Face Space)."""
