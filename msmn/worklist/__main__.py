"""`torchrun -m msmn.worklist load ...`: msmn-worklist as a module."""

from msmn.worklist.cli import main

main()
