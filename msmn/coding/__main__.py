"""`python -m msmn.coding` (e.g. `torchrun -m msmn.coding MODEL notes.jsonl --output codes.jsonl`) runs `msmn-code`."""

from msmn.coding.cli import main

main()
