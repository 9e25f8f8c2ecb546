"""The review app as a Hugging Face Space runs it: `python app.py` serves the checkpoint named by the
MSMN_MODEL environment variable (a folder or a Hub model id), or `python app.py --model FOLDER`.
The app itself is `msmn/review/` (also installed as the `msmn-app` command)."""

from msmn.review.cli import main

if __name__ == "__main__":
    main()
