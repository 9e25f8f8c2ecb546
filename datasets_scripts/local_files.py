"""The base of the builders that read the user's own files (MIMIC-III, MIMIC-IV, MDACE's notes, a
CodiEsp folder): each finds its input files in the folders it is given, and their fingerprint goes
into the config, so a changed file gets a new cache."""

from dataclasses import dataclass
from pathlib import Path

import datasets

from .files import fingerprint


@dataclass
class LocalFilesConfig(datasets.BuilderConfig):
    """input_fingerprint: set from the input files (names, sizes, modification times)."""

    input_fingerprint: str | None = None


class LocalFilesBuilder(datasets.GeneratorBasedBuilder):
    """A builder over local input files: `find_inputs(data_dir)` names them (role → path), or raises
    InputError saying which folder to give; they are kept as `input_paths` and fingerprinted."""

    BUILDER_CONFIG_CLASS = LocalFilesConfig

    def __init__(self, *args, data_dir: str | None = None, **kwargs):
        folder = None if data_dir is None else Path(data_dir).expanduser()
        self.input_paths = self.find_inputs(folder)
        kwargs["input_fingerprint"] = fingerprint(list(self.input_paths.values())) if self.input_paths else None
        super().__init__(*args, data_dir=None if folder is None else str(folder), **kwargs)

    def find_inputs(self, folder: Path | None) -> dict[str, Path]:
        raise NotImplementedError
