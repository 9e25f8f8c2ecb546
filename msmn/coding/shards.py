"""Coding under torchrun: each process codes every K-th note into its own part file, and the first
interleaves the parts into the output, so the file is the one a single process writes."""

import dataclasses
import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm.auto import tqdm

from datasets_scripts import InputError
from msmn.coding.writing import Coding, write_output
from msmn.outputs import write_whole


@dataclasses.dataclass
class Shard:
    """This process's place among those torchrun started (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @classmethod
    def from_environment(cls) -> "Shard":
        names = {"rank": "RANK", "world_size": "WORLD_SIZE", "local_rank": "LOCAL_RANK",
                 "local_world_size": "LOCAL_WORLD_SIZE"}
        return cls(**{field: int(os.environ[name]) for field, name in names.items() if name in os.environ})

    def notes(self, notes: Iterator[dict]) -> Iterator[dict]:
        """Every world_size-th note, from this rank on: each process its share, by position."""
        return itertools.islice(notes, self.rank, None, self.world_size)

    def device(self, device: str | None) -> str:
        """Each rank its own GPU (LOCAL_RANK); on CPUs each process its share of the cores."""
        if self.world_size == 1:
            return device or "cpu"
        if device and device.startswith("cuda"):
            return f"cuda:{self.local_rank}"
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.local_world_size))
        return device or "cpu"

    def part(self, output: Path) -> Path:
        return output.with_name(f"{output.name}.rank{self.rank}-of-{self.world_size}")


def check_sharding(shard: Shard, output: str | None, html: str | None, notes: list[str]) -> None:
    if shard.world_size > 1 and not output:
        raise InputError(f"{shard.world_size} processes write one file: give --output.")
    if shard.world_size > 1 and (html or not notes or "-" in notes):
        raise InputError("under torchrun, give note files (not standard input) and no --html; "
                         "write the HTML report with one process.")


def code_in_shards(coding: Coding, notes: Iterator[dict], total: int, output: Path, resume: bool, quiet: bool,
                   shard: Shard, record: dict) -> None:
    """Each rank codes its share into its own part file; rank 0 then interleaves the parts into --output,
    so the file is the one a single process writes."""
    share = len(range(shard.rank, total, shard.world_size))
    with tqdm(total=share, unit="notes", file=sys.stderr, disable=quiet or shard.rank or not sys.stderr.isatty()) as progress:
        write_output(shard.part(output), coding, shard.notes(notes), progress, resume, record)
    torch.distributed.barrier()
    if shard.rank == 0:
        parts = [Shard(rank, shard.world_size).part(output) for rank in range(shard.world_size)]

        def interleave(file):
            readers = [open(part, "rb") for part in parts]
            try:
                for index in range(total):
                    file.write(readers[index % shard.world_size].readline())
            finally:
                for reader in readers:
                    reader.close()

        write_whole(output, interleave)
        for part in parts:
            part.unlink()
    torch.distributed.barrier()
