"""Loading a checkpoint folder for coding, after checking it: an MSMN config that matches the weights,
a tokenizer, a usable device; and the checkpoint's identity (a hash of its files)."""

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from huggingface_hub import ModelCard
from transformers import AutoTokenizer

from datasets_scripts import InputError
from modeling_msmn import ICDCodingPipeline, MSMNConfig, MSMNForSequenceClassification

CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "candidate_codes.json",
                    "candidate_codes.safetensors")


def load_coder(model_dir: str, device: str | None) -> ICDCodingPipeline:
    """The icd-coding pipeline over a checkpoint folder, after checking that it holds an MSMN model."""
    folder = Path(model_dir)
    config = read_config(folder)
    check_weights(folder, config)
    if not (folder / "tokenizer.json").is_file():
        raise InputError(f"{folder}: no tokenizer.json (the model's vocabulary). Copy the whole folder that train.py "
                         "wrote: the tokenizer is saved beside the weights.")
    device = check_device(device or "cpu")
    # This package's own classes serve the folder: no remote code runs.
    model = MSMNForSequenceClassification.from_pretrained(folder, config=config)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return ICDCodingPipeline(model=model, tokenizer=tokenizer, task="icd-coding", device=device)


def read_config(folder: Path) -> MSMNConfig:
    """The folder's config.json, checked to be an MSMN config."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise InputError(
            f"{folder}: no config.json, so not a model folder. Give the folder that train.py wrote "
            "(its --output_dir) or one saved with ICDCodingPipeline.save_pretrained."
        )
    try:
        settings = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{config_file}: not valid JSON; copy config.json again from where the model was saved.") from None
    if not isinstance(settings, dict):
        raise InputError(f"{config_file}: holds a JSON {type(settings).__name__}, not a model configuration (an object).")
    model_type = settings.get("model_type")
    if model_type != "msmn":
        raise InputError(f"{folder}: model_type is {model_type!r}, not an MSMN checkpoint (model_type 'msmn').")
    try:
        return MSMNConfig.from_pretrained(folder)
    except ValueError as error:
        raise InputError(f"{config_file}: {error} Use the config.json saved with the weights.") from None


def check_weights(folder: Path, config: MSMNConfig) -> None:
    """model.safetensors is there, whole, and holds the tensors that config.json describes, in their shapes."""
    weights_file = folder / "model.safetensors"
    if not weights_file.is_file():
        raise InputError(f"{folder}: no model.safetensors (the weights). Copy the whole folder that train.py wrote; "
                         "an authors' checkpoint is converted with convert_authors_checkpoint.")
    try:
        with safe_open(weights_file, "pt") as weights:
            stored = {name: list(weights.get_slice(name).get_shape()) for name in weights.keys()}
    except SafetensorError:
        raise InputError(f"{weights_file}: damaged or truncated ({weights_file.stat().st_size:,} bytes), not "
                         "readable as safetensors; copy it again or train the model again.") from None
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        expected = {name: list(tensor.shape) for name, tensor in MSMNForSequenceClassification(config).state_dict().items()}
    different = [name for name in expected if stored.get(name) != expected[name]]
    if different:
        name = different[0]
        raise InputError(
            f"{folder}: config.json does not match model.safetensors ({len(different)} of {len(expected)} tensors differ; {name}: "
            f"{stored.get(name, 'missing')} in the weights, {expected[name]} from config.json with "
            f"{config.num_labels} codes). Use the config.json saved with these weights."
        )


def check_device(device: str) -> str:
    """`device` if torch can use it here."""
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise InputError(f"--device {device!r}: not a torch device; give e.g. cpu, cuda or cuda:1.") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: torch finds no CUDA GPU on this machine; leave --device out to use the CPU.")
    if kind == "cuda" and (torch.device(device).index or 0) >= torch.cuda.device_count():
        raise InputError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), counted from 0.")
    return device


def checkpoint_identity(folder: Path) -> str:
    """SHA-256 of the checkpoint's files (config, weights, tokenizer, candidates): the model that codes."""
    digest = hashlib.sha256()
    for name in CHECKPOINT_FILES:
        if (folder / name).is_file():
            digest.update(name.encode() + b"\0")
            with open(folder / name, "rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "candidate_codes.json",
                    "candidate_codes.safetensors")


def model_card_data(folder: Path):
    """The metadata of the checkpoint's model card (README.md), or None without one."""
    return ModelCard.load(folder / "README.md").data if (folder / "README.md").is_file() else None
