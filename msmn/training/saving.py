"""Saving a trained model: the self-contained checkpoint folder (weights, config, tokenizer, code,
candidates, results, model card), and its upload to the Hub, said file by file before it starts."""

import json
from fnmatch import fnmatch
from pathlib import Path

from modeling_msmn import ICDCodingPipeline
from msmn.evaluation.metrics import metric_table
from msmn.training.model_card import model_card

HUB_IGNORED = ["checkpoint-*", "runs/*"]  # what --push_to_hub leaves out of the folder: the Trainer's own files


def save_checkpoint(trainer, results, dev_results, card, min_notes, push_to_hub, ranker=None):
    folder = Path(trainer.args.output_dir)
    # through the pipeline: the folder also gets the pipeline's code and its entry in the config
    ICDCodingPipeline(model=trainer.model, tokenizer=trainer.processing_class).save_pretrained(folder)
    if ranker is not None:
        ranker.save_pretrained(folder)
    (folder / "training_args.json").write_text(trainer.args.to_json_string(), encoding="utf-8")
    (folder / "test_results.json").write_text(json.dumps(results, indent=2))
    (folder / "dev_results.json").write_text(json.dumps(dev_results, indent=2))
    repo = trainer.args.hub_model_id or folder.name
    model_card(trainer.model.config, results, card, repo, min_notes).save(folder / "README.md")
    if results:
        print("\nTest set (threshold tuned on dev):\n" + metric_table(results))
    print(f"Saved MSMN ({trainer.model.config.num_labels} codes) to {folder}")
    if push_to_hub:
        from huggingface_hub import HfApi

        print(upload_summary(folder, repo, trainer.args.hub_private_repo, trainer.model.config.vocab_size, min_notes))
        api = HfApi(token=trainer.args.hub_token)
        api.create_repo(repo, private=trainer.args.hub_private_repo, exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=folder, ignore_patterns=HUB_IGNORED,
                          commit_message="MSMN checkpoint trained with msmn/train.py")
        print(f"Pushed {folder} to https://huggingface.co/{repo}")


def upload_summary(folder: Path, repo: str, private: bool | None, vocab_size: int, min_notes: int) -> str:
    """What --push_to_hub uploads, said before it uploads: each file, who can see it, what the vocabulary holds."""
    names = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    names = [name for name in names if not any(fnmatch(name, pattern) for pattern in HUB_IGNORED)]
    visibility = "private" if private else "public unless your account makes new repositories private"
    lines = [f"Uploading {len(names)} files of {folder} to https://huggingface.co/{repo} ({visibility}):"]
    lines += [f"  {name} ({(folder / name).stat().st_size:,} bytes)" for name in names]
    lines.append(f"tokenizer.json lists the {vocab_size:,} words of the vocabulary: the words of the code terms, and "
                 f"each word of the training notes that at least {min_notes} of them hold (--min_notes).")
    return "\n".join(lines)
